"""The agent's contract under SIGKILL: a real agent process takes begin/finish requests from
several clients and is SIGKILLed at a random moment; every payment whose begin got a 2xx is
in the journal afterwards, every finish that got a 2xx has its state, and a payment begun but
never finished is reported in doubt by the restarted agent (and its last-transaction answer
says so)."""
import http.client
import os
import random
import threading
import time

import pytest

import posfast  # noqa: E402
from posfast.agent import find_agent  # noqa: E402

from _agent_helpers import AgentProcess, new_journal  # noqa: E402

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="SIGKILL of a real agent: POSIX only")


def _hammer(agent, terminal, acked, stop):
    """Begin and finish payments until the agent dies; record what was acknowledged."""
    client = agent.client(timeout=10)
    n = 0
    try:
        while not stop.is_set():
            n += 1
            ref = "t%d-%d" % (terminal, n)
            status, doc = client.call("POST", "/v1/payments", {"terminal": terminal, "amount": n,
                                                               "client_ref": ref})
            if status not in (200, 201):
                acked.append(("error", ref, status, doc))
                return
            acked.append(("begin", ref, doc["txn_id"], n))
            if n % 3 == 0:
                continue                                 # left in doubt on purpose
            state = "approved" if n % 2 else "declined"
            status, doc = client.call("POST", "/v1/payments/%d/finish" % doc["txn_id"], {"state": state})
            if status != 200:
                acked.append(("error", ref, status, doc))
                return
            acked.append(("finish", ref, doc["txn_id"], state))
    except (OSError, http.client.HTTPException, ValueError):
        return                                           # the agent was killed mid-request
    finally:
        client.close()


@pytest.mark.parametrize("round_seed", [1, 2, 3])
def test_sigkill_mid_request_loses_nothing_acknowledged(tmp_path, round_seed):
    rng = random.Random(round_seed)
    path = new_journal(tmp_path / "crash.pfj", capacity=1 << 15)
    agent = AgentProcess(path)
    acked, stop = [], threading.Event()
    workers = [threading.Thread(target=_hammer, args=(agent, terminal, acked, stop), daemon=True)
               for terminal in (1, 2, 3, 4)]
    for w in workers:
        w.start()
    time.sleep(rng.uniform(0.3, 1.0))
    # and on until enough was acknowledged to test anything (a slow or loaded CPU: no speed
    # is assumed), then at a random moment of the requests in flight
    deadline = time.time() + 120
    while sum(1 for a in list(acked) if a[0] == "begin") <= 20 and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(rng.uniform(0, 0.05))
    agent.kill()                                        # SIGKILL, mid-request for some client
    stop.set()
    for w in workers:
        w.join(30)
    assert agent.proc.returncode == -9, agent.output()
    errors = [a for a in acked if a[0] == "error"]
    assert not errors, errors
    begun = {ref: txn for kind, ref, txn, _ in acked if kind == "begin"}
    finished = {ref: state for kind, ref, _, state in acked if kind == "finish"}
    assert len(begun) > 20, "too few requests before the kill to test anything"

    # what the killed agent left (its socket, its discovery file) is stale: the CLI ignores it
    assert os.path.exists(path + ".agent") and find_agent(path) is None

    # restarted: every acknowledged begin and finish is there, as acknowledged
    with AgentProcess(path) as again, again.client() as client:
        for ref, txn in begun.items():
            status, found = client.call("GET", "/v1/payments/find?client_ref=" + ref)
            assert status == 200 and found["txn_id"] == txn, (ref, found)
            if ref in finished:
                assert found["state"] == finished[ref], (ref, found)
        status, doubt = client.call("GET", "/v1/payments/in-doubt")
        in_doubt = {p["client_ref"] for p in doubt["payments"]}
        # each payment begun but never acknowledged as finished is in doubt (or its finish
        # reached the disk just before the kill, unacknowledged: then it has its final state)
        for ref in begun:
            if ref not in finished:
                status, found = client.call("GET", "/v1/payments/find?client_ref=" + ref)
                assert (ref in in_doubt) == (found["state"] == "pending"), (ref, found)
        assert {r for r in begun if int(r.rsplit("-", 1)[1]) % 3 == 0} <= in_doubt
        for terminal in (1, 2, 3, 4):
            status, last = client.call("GET", "/v1/terminals/%d/last-transaction" % terminal)
            assert status == 200 and last["in_doubt"] == (last["state"] == "pending")
        status, report = client.call("GET", "/v1/verify")
        assert report["ok"] is True, report
    with posfast.Journal.open(path, readonly=True) as j:
        assert j.verify().ok
