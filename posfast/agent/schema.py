"""The agent's OpenAPI document (``openapi.json``, shipped beside this module) and the checks
of requests against it: the document is the one description of what a request may hold, so
what clients are generated from and what the agent accepts cannot drift apart.

Only the JSON Schema the document uses is checked here: ``type`` (one or a list),
``properties``, ``required``, ``additionalProperties``, ``enum``, ``minimum`` / ``maximum``,
``minLength`` / ``maxLength`` (in UTF-8 bytes, as the journal stores them), ``pattern``,
``items`` and ``$ref``.  A failure is a :class:`BadRequest` naming the field.

>>> spec = load_openapi()
>>> check(spec, {"$ref": "#/components/schemas/FinishPayment"}, {"state": "maybe"}, "")
Traceback (most recent call last):
...
posfast.agent.schema.BadRequest: state: must be one of approved, declined, failed, reversed, voided
"""
from __future__ import annotations

import functools
import json
import os
import re
from typing import Any, Optional

from ..errors import InvalidArgument

OPENAPI_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "openapi.json")

__all__ = ["BadRequest", "OPENAPI_PATH", "check", "compile_check", "compile_params", "load_openapi",
           "parse_query"]


class BadRequest(InvalidArgument):
    """A request the agent refuses with 400: ``field`` names the part at fault (None: the
    body as a whole)."""

    def __init__(self, field: Optional[str], message: str):
        super().__init__("%s: %s" % (field, message) if field else message)
        self.field = field
        self.detail = message


@functools.lru_cache(maxsize=1)
def load_openapi() -> dict:
    """The agent's OpenAPI 3.1 document, as served at ``GET /openapi.json``."""
    with open(OPENAPI_PATH, encoding="utf-8") as fh:
        return json.load(fh)


def _resolve(spec: dict, schema: dict) -> dict:
    while "$ref" in schema:
        node: Any = spec
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        schema = node
    return schema


_TYPES: dict = {"string": str, "integer": int, "boolean": bool, "object": dict, "array": list,
          "number": (int, float), "null": type(None)}


def _is(value, name) -> bool:
    if name in ("integer", "number") and isinstance(value, bool):
        return False                    # JSON true is not 1
    return isinstance(value, _TYPES[name])


def check(spec: dict, schema: dict, value, where: str) -> None:
    """Raise :class:`BadRequest` unless `value` matches `schema` (`where`: its field name)."""
    schema = _resolve(spec, schema)
    if "oneOf" in schema:
        for option in schema["oneOf"]:
            try:
                check(spec, option, value, where)
                return
            except BadRequest:
                continue
        raise BadRequest(where or None, "does not match the schema")
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else types
        if not any(_is(value, t) for t in names):
            raise BadRequest(where or None, "must be %s, not %s" % (
                " or ".join("an integer" if t == "integer" else "an object" if t == "object"
                            else "an array" if t == "array" else "a " + t for t in names),
                _json_type(value)))
    if "const" in schema and value != schema["const"]:
        raise BadRequest(where or None, "must be %s" % json.dumps(schema["const"]))
    if "enum" in schema and value not in schema["enum"]:
        raise BadRequest(where or None, "must be one of %s" % ", ".join(map(str, schema["enum"])))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            raise BadRequest(where, "must be at least %d" % schema["minimum"])
        if "maximum" in schema and value > schema["maximum"]:
            raise BadRequest(where, "must be at most %d" % schema["maximum"])
    if isinstance(value, str):
        size = len(value.encode("utf-8", "surrogatepass"))
        if "minLength" in schema and size < schema["minLength"]:
            raise BadRequest(where, "must not be empty" if schema["minLength"] == 1 else
                             "must be at least %d bytes" % schema["minLength"])
        if "maxLength" in schema and size > schema["maxLength"]:
            raise BadRequest(where, "must be at most %d bytes of UTF-8 (got %d)"
                             % (schema["maxLength"], size))
        if "pattern" in schema and not re.search(schema["pattern"], value):
            raise BadRequest(where, "must match %s" % schema["pattern"])
        if "\0" in value:
            raise BadRequest(where, "must not hold NUL characters")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for name in schema.get("required", ()):
            if name not in value:
                raise BadRequest(_join(where, name), "is required")
        extra = schema.get("additionalProperties", True)
        for name, item in value.items():
            if name in props:
                check(spec, props[name], item, _join(where, name))
            elif extra is False:
                raise BadRequest(_join(where, name), "is not a field of this request (fields: %s)"
                                 % ", ".join(sorted(props)))
            elif isinstance(extra, dict):
                check(spec, extra, item, _join(where, name))
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            check(spec, schema["items"], item, "%s[%d]" % (where, i))


def _join(where: str, name: str) -> str:
    return "%s.%s" % (where, name) if where else name


def _json_type(value) -> str:
    for name in ("null", "boolean", "integer", "number", "string", "array", "object"):
        if _is(value, name):
            return {"null": "null", "integer": "an integer", "number": "a number",
                    "array": "an array", "object": "an object"}.get(name, "a " + name)
    return type(value).__name__


def _type_error(names, value, where) -> BadRequest:
    return BadRequest(where or None, "must be %s, not %s" % (
        " or ".join("an integer" if t == "integer" else "an object" if t == "object"
                    else "an array" if t == "array" else "a " + t for t in names),
        _json_type(value)))


def compile_check(spec: dict, schema: dict):
    """`check` of one schema, prepared once: ``fn(value, where)`` raises the same
    :class:`BadRequest` as ``check(spec, schema, value, where)``, with the schema's references
    resolved, its patterns compiled and its properties' checks built beforehand (the agent
    checks every request body: read from the document each time, that cost more than the
    journal's append).

    >>> finish = compile_check(load_openapi(), {"$ref": "#/components/schemas/FinishPayment"})
    >>> finish({"state": "approved"}, "")
    >>> finish({"state": "maybe"}, "")
    Traceback (most recent call last):
    ...
    posfast.agent.schema.BadRequest: state: must be one of approved, declined, failed, reversed, voided
    """
    schema = _resolve(spec, schema)
    if "oneOf" in schema:
        options = [compile_check(spec, option) for option in schema["oneOf"]]

        def one_of(value, where):
            for option in options:
                try:
                    option(value, where)
                    return
                except BadRequest:
                    continue
            raise BadRequest(where or None, "does not match the schema")
        return one_of
    steps: list = []
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else list(types)
        pytypes = tuple({t for name in names for t in
                         (_TYPES[name] if isinstance(_TYPES[name], tuple) else (_TYPES[name],))})
        bool_ok = "boolean" in names

        def type_step(value, where):
            if not isinstance(value, pytypes) or (value.__class__ is bool and not bool_ok):
                raise _type_error(names, value, where)
        steps.append(type_step)
    if "const" in schema:
        const = schema["const"]

        def const_step(value, where):
            if value != const:
                raise BadRequest(where or None, "must be %s" % json.dumps(const))
        steps.append(const_step)
    if "enum" in schema:
        enum = schema["enum"]

        def enum_step(value, where):
            if value not in enum:
                raise BadRequest(where or None, "must be one of %s" % ", ".join(map(str, enum)))
        steps.append(enum_step)
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None or high is not None:
        def range_step(value, where):
            if isinstance(value, (int, float)) and value.__class__ is not bool:
                if low is not None and value < low:
                    raise BadRequest(where, "must be at least %d" % low)
                if high is not None and value > high:
                    raise BadRequest(where, "must be at most %d" % high)
        steps.append(range_step)
    shortest, longest = schema.get("minLength"), schema.get("maxLength")
    pattern = re.compile(schema["pattern"]) if "pattern" in schema else None

    def string_step(value, where):
        if isinstance(value, str):
            if shortest is not None or longest is not None:
                size = len(value.encode("utf-8", "surrogatepass"))
                if shortest is not None and size < shortest:
                    raise BadRequest(where, "must not be empty" if shortest == 1 else
                                     "must be at least %d bytes" % shortest)
                if longest is not None and size > longest:
                    raise BadRequest(where, "must be at most %d bytes of UTF-8 (got %d)"
                                     % (longest, size))
            if pattern is not None and not pattern.search(value):
                raise BadRequest(where, "must match %s" % schema["pattern"])
            if "\0" in value:
                raise BadRequest(where, "must not hold NUL characters")
    if types is None or "string" in names:
        steps.append(string_step)
    if types is None or "object" in names:
        props = {name: compile_check(spec, item) for name, item in schema.get("properties", {}).items()}
        required = list(schema.get("required", ()))
        extra = schema.get("additionalProperties", True)
        extra_check = compile_check(spec, extra) if isinstance(extra, dict) else None
        fields = ", ".join(sorted(props))

        def object_step(value, where):
            if isinstance(value, dict):
                for name in required:
                    if name not in value:
                        raise BadRequest(_join(where, name), "is required")
                for name, item in value.items():
                    prop = props.get(name)
                    if prop is not None:
                        prop(item, _join(where, name))
                    elif extra is False:
                        raise BadRequest(_join(where, name), "is not a field of this request "
                                         "(fields: %s)" % fields)
                    elif extra_check is not None:
                        extra_check(item, _join(where, name))
        steps.append(object_step)
    if "items" in schema and (types is None or "array" in names):
        each = compile_check(spec, schema["items"])

        def array_step(value, where):
            if isinstance(value, list):
                for i, item in enumerate(value):
                    each(item, "%s[%d]" % (where, i))
        steps.append(array_step)
    if len(steps) == 1:
        return steps[0]

    def run(value, where):
        for step in steps:
            step(value, where)
    return run


_INTEGER = re.compile(r"^-?[0-9]{1,20}$")


def parse_query(spec: dict, parameters: list, query: dict, path: dict) -> dict:
    """The query (``{name: [values]}``) and path (``{name: value}``) parameters of an
    operation, typed and checked: ``{name: value}`` of those given.  Unknown query parameters are refused (a misspelt filter would otherwise
    widen the answer silently)."""
    known = {p["name"] for p in parameters if p["in"] == "query"}
    for name in query:
        if name not in known:
            raise BadRequest(name, "is not a parameter of this request (parameters: %s)"
                             % (", ".join(sorted(known)) or "none"))
    out = {}
    for param in parameters:
        name, source = param["name"], query if param["in"] == "query" else path
        if name not in source:
            if param.get("required"):
                raise BadRequest(name, "is required")
            continue
        values = source[name] if isinstance(source[name], list) else [source[name]]
        if len(values) > 1:
            raise BadRequest(name, "is given %d times; give it once" % len(values))
        text = values[0]
        schema = _resolve(spec, param["schema"])
        value: Any = text
        if schema.get("type") == "integer":
            if not _INTEGER.match(text):
                raise BadRequest(name, "must be an integer, not %r" % text[:40])
            value = int(text)
        check(spec, schema, value, name)
        out[name] = value
    return out


def compile_params(spec: dict, parameters: list):
    """`parse_query` of one operation, prepared once: ``fn(query, path)`` gives what
    ``parse_query(spec, parameters, query, path)`` gives, and raises the same errors.

    >>> last = compile_params(load_openapi(), [{"name": "terminal", "in": "path", "required": True,
    ...                                         "schema": {"type": "integer", "minimum": 0}}])
    >>> last({}, {"terminal": "3"})
    {'terminal': 3}
    """
    known = {p["name"] for p in parameters if p["in"] == "query"}
    known_text = ", ".join(sorted(known)) or "none"
    plan = []
    for param in parameters:
        schema = _resolve(spec, param["schema"])
        plan.append((param["name"], param["in"] == "query", bool(param.get("required")),
                     schema.get("type") == "integer", compile_check(spec, schema)))

    if not plan:
        def parse_none(query: dict, path: dict) -> dict:
            for name in query:
                raise BadRequest(name, "is not a parameter of this request (parameters: none)")
            return {}
        return parse_none

    def parse(query: dict, path: dict) -> dict:
        for name in query:
            if name not in known:
                raise BadRequest(name, "is not a parameter of this request (parameters: %s)"
                                 % known_text)
        out = {}
        for name, in_query, required, integer, checker in plan:
            source = query if in_query else path
            if name not in source:
                if required:
                    raise BadRequest(name, "is required")
                continue
            values = source[name]
            if isinstance(values, list):
                if len(values) > 1:
                    raise BadRequest(name, "is given %d times; give it once" % len(values))
                text = values[0]
            else:
                text = values
            value: Any = text
            if integer:
                if not _INTEGER.match(text):
                    raise BadRequest(name, "must be an integer, not %r" % text[:40])
                value = int(text)
            checker(value, name)
            out[name] = value
        return out
    return parse
