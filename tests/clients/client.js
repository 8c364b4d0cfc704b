// A web till's local bridge in Node.js calling the posfast agent over its Unix socket, with
// Node's own http module (socketPath) and nothing from npm:
//
//     node client.js /path/to/till.pfj.sock TERMINAL AMOUNT ORDER_REF
//
// It begins a payment by order reference, finishes it approved, finds it by that reference
// and prints one line per answer: "<status> <json>".
"use strict";
const http = require("http");
const [socketPath, terminal, amount, orderRef] = process.argv.slice(2);

function call(method, path, body) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? "" : JSON.stringify(body);
    const req = http.request({ socketPath, method, path, headers: {
      "Content-Type": "application/json", "Content-Length": Buffer.byteLength(data) } }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (chunk) => { text += chunk; });
      res.on("end", () => resolve([res.statusCode, JSON.parse(text)]));
    });
    req.on("error", reject);
    req.end(data);
  });
}

(async () => {
  const [s1, begun] = await call("POST", "/v1/payments",
    { terminal: Number(terminal), amount: Number(amount), method: "wallet", channel: "wechat", order_ref: orderRef });
  console.log(s1, JSON.stringify(begun));
  const [s2, done] = await call("POST", `/v1/payments/${begun.txn_id}/finish`, { state: "approved", auth_code: "NODE01" });
  console.log(s2, JSON.stringify(done));
  const [s3, found] = await call("GET", `/v1/payments/find?order_ref=${encodeURIComponent(orderRef)}`);
  console.log(s3, JSON.stringify(found));
})().catch((err) => { console.error(err); process.exit(1); });
