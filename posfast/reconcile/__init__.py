"""Reconciliation (see :mod:`posfast.reconcile.checks`)."""
from .checks import *  # noqa: F401,F403
from .checks import __all__, SETTLEMENT_DTYPE, _window_pairs  # noqa: F401
