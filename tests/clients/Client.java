// A POS written in Java calling the posfast agent over its Unix socket, with the JDK alone
// (JDK 16+: UnixDomainSocketAddress; java.net.http cannot use a Unix socket, so this speaks
// HTTP/1.1 over a SocketChannel).  Run as a single-file program:
//
//     java Client.java /path/to/till.pfj.sock TERMINAL AMOUNT CLIENT_REF
//
// It begins a payment, finishes it approved, reads the terminal's last transaction back and
// prints one line per answer: "<status> <json>".
import java.io.ByteArrayOutputStream;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

public class Client {
    static String socketPath;

    static String[] call(String method, String path, String body) throws Exception {
        try (SocketChannel channel = SocketChannel.open(StandardProtocolFamily.UNIX)) {
            channel.connect(UnixDomainSocketAddress.of(socketPath));
            byte[] payload = body == null ? new byte[0] : body.getBytes(StandardCharsets.UTF_8);
            String head = method + " " + path + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                    + "Accept: application/json\r\nContent-Type: application/json\r\n"
                    + "Content-Length: " + payload.length + "\r\n\r\n";
            channel.write(ByteBuffer.wrap(head.getBytes(StandardCharsets.US_ASCII)));
            channel.write(ByteBuffer.wrap(payload));
            ByteArrayOutputStream received = new ByteArrayOutputStream();
            ByteBuffer buffer = ByteBuffer.allocate(8192);
            while (channel.read(buffer) >= 0) {
                buffer.flip();
                received.write(buffer.array(), 0, buffer.limit());
                buffer.clear();
            }
            String response = received.toString(StandardCharsets.UTF_8);
            String status = response.substring(9, 12);
            String json = response.substring(response.indexOf("\r\n\r\n") + 4);
            return new String[] {status, json};
        }
    }

    static long number(String json, String field) {
        Matcher m = Pattern.compile("\"" + field + "\": ?(-?\\d+)").matcher(json);
        if (!m.find()) throw new IllegalStateException("no " + field + " in " + json);
        return Long.parseLong(m.group(1));
    }

    public static void main(String[] args) throws Exception {
        socketPath = args[0];
        String terminal = args[1], amount = args[2], ref = args[3];
        String[] begun = call("POST", "/v1/payments", "{\"terminal\": " + terminal + ", \"amount\": " + amount
                + ", \"currency\": 156, \"method\": \"qr\", \"channel\": \"alipay\", \"client_ref\": \"" + ref + "\"}");
        System.out.println(begun[0] + " " + begun[1]);
        long txn = number(begun[1], "txn_id");
        String[] finished = call("POST", "/v1/payments/" + txn + "/finish",
                "{\"state\": \"approved\", \"host_ref\": \"2026120122001400001234567890\"}");
        System.out.println(finished[0] + " " + finished[1]);
        String[] last = call("GET", "/v1/terminals/" + terminal + "/last-transaction", null);
        System.out.println(last[0] + " " + last[1]);
    }
}
