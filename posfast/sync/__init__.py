"""Offline sync (see :mod:`posfast.sync.protocol`)."""
from .protocol import *  # noqa: F401,F403
from .protocol import __all__, ECHO_LIMIT, MAX_BATCH, _db_rows, _schema  # noqa: F401
