"""The posfast agent: one local service that POS software in any language calls.

``posfast agent JOURNAL`` is the one writer of a terminal's journal.  It speaks JSON over
HTTP on a Unix domain socket (``JOURNAL.sock``, mode 0600) or on loopback TCP with a bearer
token, serves its OpenAPI 3.1 document at ``GET /openapi.json`` (shipped as
``posfast/agent/openapi.json``), runs the syncer in the background and drives the receipt
printer.  A 2xx to a write means its record is on stable storage; every refusal is a JSON
``{"ok": false, "reason", "field", "message"}`` with a 4xx status.

* :mod:`~posfast.agent.schema`: the OpenAPI document and the request checks made from it;
* :mod:`~posfast.agent.app`: the application, one handler per operation;
* :mod:`~posfast.agent.http1`: its HTTP/1.1 server, on the standard library's asyncio;
* :mod:`~posfast.agent.service`: :func:`run_agent` (sockets, TLS, syncers, discovery file);
* :mod:`~posfast.agent.client`: :func:`find_agent` and :class:`AgentClient` (standard
  library), what the CLI's write verbs use while an agent holds the journal.

>>> sorted(load_openapi()["paths"])[:3]
['/openapi.json', '/v1/days/close', '/v1/health']
"""
from posfast.agent.schema import OPENAPI_PATH, BadRequest, load_openapi
from posfast.agent.client import AgentClient, discovery_path, find_agent, socket_path_for
from posfast.agent.app import MAX_BODY, make_app, record_dict
from posfast.agent.service import parse_listen, read_token_file, run_agent

__all__ = ["AgentClient", "BadRequest", "MAX_BODY", "OPENAPI_PATH", "discovery_path", "find_agent",
           "load_openapi", "make_app", "parse_listen", "read_token_file", "record_dict", "run_agent",
           "socket_path_for"]
