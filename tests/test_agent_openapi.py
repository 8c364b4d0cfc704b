"""The agent's OpenAPI 3.1 document: valid (openapi-spec-validator), the same routes as the
application (every route documented, every documented operation served), and exercised
against a running agent by a property-based API tester (schemathesis): no 5xx, every
response of a documented status and matching its schema."""
import os

import pytest

import posfast  # noqa: E402
from posfast.agent import OPENAPI_PATH, load_openapi, make_app  # noqa: E402

from _agent_helpers import AgentProcess, new_journal  # noqa: E402

TOKEN = "openapi-token-7b2d4a6c3c9a"


def test_the_document_is_valid_openapi_3_1():
    validator = pytest.importorskip("openapi_spec_validator", reason="openapi-spec-validator is in the test extra")
    spec = load_openapi()
    assert spec["openapi"] == "3.1.0"
    validator.validate(spec)
    assert os.path.dirname(OPENAPI_PATH) == os.path.dirname(posfast.agent.__file__)   # shipped in the package


def test_every_route_of_the_app_is_documented_and_every_documented_operation_is_served(tmp_path):
    with posfast.Journal.create(tmp_path / "routes.pfj", capacity=64) as journal:
        app = make_app(journal)
        routes = {(method.lower(), path) for method, path in app.router.routes()}
        app.close()
    documented = {(verb, path) for path, item in load_openapi()["paths"].items() for verb in item}
    assert routes == documented
    assert {"post", "get"} >= {verb for verb, _ in documented}
    operations = {op["operationId"] for item in load_openapi()["paths"].values() for op in item.values()}
    assert {"beginPayment", "finishPayment", "resolvePayment", "lastTransaction", "inDoubt", "findPayment",
            "query", "totals", "printReceipt", "reprint", "closeDay", "status", "verify", "syncNow"} <= operations


def test_every_documented_error_reply_is_the_error_schema():
    spec = load_openapi()
    for path, item in spec["paths"].items():
        for verb, op in item.items():
            for code, reply in op["responses"].items():
                schema = reply["content"]["application/json"]["schema"]
                assert (schema == {"$ref": "#/components/schemas/Error"}) == (int(code) >= 400), (path, verb, code)


schemathesis = None
try:                                                    # (Python 3.10+, in the test extra)
    import schemathesis
except ImportError:                                     # pragma: no cover - where it cannot install
    pass


@pytest.fixture(scope="module")
def live_agent(tmp_path_factory):
    folder = tmp_path_factory.mktemp("schemathesis")
    token_file = folder / "token"
    token_file.write_text(TOKEN)
    path = new_journal(folder / "till.pfj")
    cwd = os.getcwd()
    os.chdir(folder)                 # (nothing the agent is asked to write lands in the checkout)
    try:
        agent = AgentProcess(path, "--listen", "127.0.0.1:0", "--token-file", token_file,
                             "--printer", folder / "printer.bin")
    finally:
        os.chdir(cwd)
    with agent.client(token=TOKEN) as client:           # something to find, print and close
        for n in range(1, 6):
            status, doc = client.call("POST", "/v1/payments", {"terminal": n % 3, "amount": 100 * n,
                                                               "client_ref": "seed-%d" % n,
                                                               "receipt": {"merchant": "M"}})
            if n % 2:
                client.call("POST", "/v1/payments/%d/finish" % doc["txn_id"], {"state": "approved"})
    yield agent
    assert agent.stop() == 0, agent.output()[-3000:]
    assert "Traceback" not in agent.output(), agent.output()[-3000:]


if schemathesis is not None:
    from hypothesis import HealthCheck, settings

    # syncNow and reprint take addresses (a back office, a printer) that would send generated
    # traffic to generated hosts; their refusals are tested one by one in test_agent.py
    SCHEMA = schemathesis.openapi.from_path(OPENAPI_PATH).exclude(operation_id=["syncNow", "reprint"])

    @SCHEMA.parametrize()
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    def test_generated_requests_never_get_a_5xx_and_every_reply_matches_its_schema(case, live_agent):
        from schemathesis.checks import not_a_server_error
        from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,
                                                       status_code_conformance)
        case.call_and_validate(base_url=live_agent.url, headers={"Authorization": "Bearer " + TOKEN},
                               checks=[not_a_server_error, status_code_conformance, content_type_conformance,
                                       response_schema_conformance], timeout=30)
else:                                                   # pragma: no cover
    def test_generated_requests_never_get_a_5xx_and_every_reply_matches_its_schema():
        pytest.skip("schemathesis is not installed (test extra; Python 3.10+)")
