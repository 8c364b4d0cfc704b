"""Compatibility module: the sync server now lives in :mod:`posfast.sync.server`
(run it with ``posfast serve``)."""
from .sync import server as _server
from .sync.server import *  # noqa: F401,F403
from .sync.server import (AUTH_LOG_BURST, DEFAULT_AUTH_FAILURES, DEFAULT_BODY_TIMEOUT,  # noqa: F401
                          DEFAULT_HEADER_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_BATCH, DEFAULT_MAX_BODY,
                          DEFAULT_MAX_CONNECTIONS, MIN_TOKEN_LENGTH, RunningServer, load_tokens,
                          make_app, open_back_office, parse_tokens, serve, server_ssl_context,
                          start_in_thread)

__all__ = _server.__all__
