"""The agent's request checks (posfast/agent/schema.py), built once per operation
(`compile_check`, `compile_params`), answer exactly as the reading of the document they replace
(`check`, `parse_query`): the same values pass, the same values fail with the same field and
message, for every schema and every operation's parameters of the shipped OpenAPI document;
and the router finds what a route's regular expression found."""
import re

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from posfast.agent.http1 import Router
from posfast.agent.schema import BadRequest, check, compile_check, compile_params, load_openapi, parse_query

SPEC = load_openapi()
SCHEMAS = sorted(SPEC["components"]["schemas"])
OPERATIONS = [(path, verb) for path, item in sorted(SPEC["paths"].items()) for verb in sorted(item)]


def _names(node, out):
    if isinstance(node, dict):
        out.update(node.get("properties", {}))
        for value in node.values():
            _names(value, out)
    elif isinstance(node, list):
        for value in node:
            _names(value, out)
    return out


#: every property name the document has, and its enums' words: generated objects hit the
#: checks of real fields, not only "is not a field of this request"
WORDS = sorted(set(_names(SPEC, {})) | {w for w in re.findall(r'"enum": \[([^\]]*)\]', str(SPEC))
                                         for w in re.findall(r"'([^']*)'", w)})
SCALARS = (st.none() | st.booleans() | st.integers(-2, 2 ** 64) | st.floats(allow_nan=False)
           | st.sampled_from(WORDS) | st.text(max_size=80) | st.sampled_from(["", "\0", "12345", "é" * 40]))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.sampled_from(WORDS) | st.text(max_size=5), inner, max_size=6),
                    max_leaves=25)


def _outcome(fn, *args):
    try:
        return ("ok", fn(*args))
    except BadRequest as exc:
        return ("refused", exc.field, exc.detail)


@pytest.mark.parametrize("name", SCHEMAS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=JSON)
def test_a_compiled_schema_check_answers_as_the_document_s_reading(name, value):
    schema = {"$ref": "#/components/schemas/%s" % name}
    assert _outcome(compile_check(SPEC, schema), value, "") == _outcome(check, SPEC, schema, value, "")


@pytest.mark.parametrize("path,verb", OPERATIONS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_compiled_parameters_answer_as_the_document_s_reading(path, verb, data):
    parameters = SPEC["paths"][path][verb].get("parameters", [])
    names = [p["name"] for p in parameters] + ["junk"]
    text = st.sampled_from(["1", "0", "-3", "99999999999999999999999", "x", "", "2026-11-20", "sale",
                            "approved"]) | st.text(max_size=8)
    query = data.draw(st.dictionaries(st.sampled_from(names), st.lists(text, min_size=1, max_size=2), max_size=4))
    match = data.draw(st.dictionaries(st.sampled_from(names), text, max_size=2))
    assert _outcome(compile_params(SPEC, parameters), query, match) == \
        _outcome(parse_query, SPEC, parameters, query, match)


def test_a_compiled_check_names_the_field_at_fault():
    begin = compile_check(SPEC, {"$ref": "#/components/schemas/BeginPayment"})
    begin({"terminal": 3, "amount": 1250, "client_ref": "T3-0001"}, "")
    with pytest.raises(BadRequest) as info:
        begin({"terminal": 3, "amount": 12.5}, "")
    assert (info.value.field, info.value.detail) == ("amount", "must be an integer, not a number")
    with pytest.raises(BadRequest) as info:
        begin({"terminal": 3, "amount": True}, "")
    assert info.value.field == "amount"
    with pytest.raises(BadRequest) as info:
        begin({"terminal": 3, "amount": 1, "client_ref": "x" * 17}, "")
    assert info.value.detail == "must be at most 16 bytes of UTF-8 (got 17)"


def _regex_route(templates, method, path):
    """What the router answered when each route was a regular expression tried in order."""
    allowed = []
    for template, methods in templates:
        pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template)) + r"\Z"
        found = re.match(pattern, path)
        if found is None:
            continue
        if method in methods:
            return methods[method], found.groupdict()
        allowed += methods
    return ("405", sorted(set(allowed))) if allowed else ("404", None)


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_the_router_finds_what_the_routes_regular_expressions_found(data):
    templates = [(path, {verb.upper(): "%s %s" % (verb, path) for verb in item})
                 for path, item in SPEC["paths"].items()]
    router = Router()
    for template, methods in templates:
        for method, handler in methods.items():
            router.add(method, template, handler)
    segments = sorted({part for path, _ in templates for part in path.split("/")} | {"12", "", "x y", "é"})
    path = "/".join(data.draw(st.lists(st.sampled_from(segments), min_size=1, max_size=7)))
    if not path.startswith("/"):
        path = "/" + path
    method = data.draw(st.sampled_from(["GET", "POST", "PUT"]))
    try:
        got = router.resolve(method, path)
    except Exception as exc:               # the router's refusal: its status and Allow header
        got = (str(exc.status), sorted(exc.headers["Allow"].split(", ")) if exc.status == 405 else None)
    assert got == _regex_route(templates, method, path)


@settings(max_examples=300, deadline=None)
@given(doc=st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text()
                        | st.dates() | st.binary(max_size=4),
                        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=5),
                        max_leaves=20))
def test_the_replies_encoder_writes_what_json_dumps_wrote(doc):
    """The agent's replies: its encoder built once writes what ``json.dumps(doc,
    ensure_ascii=False, default=str)`` wrote per reply (NaN and infinities too, dates and
    bytes through str)."""
    import json
    from posfast.agent.app import _begun, _encoder, _finished
    assert _encoder()(doc) == json.dumps(doc, ensure_ascii=False, default=str)
    assert json.loads(_begun(7, 2, 3)) == {"txn_id": 7, "state": "pending", "created": True, "receipt_no": 2,
                                           "terminal": 3}
    assert json.loads(_finished(7, 9, "voided")) == {"txn_id": 7, "seq": 9, "state": "voided"}
