"""Exact decimal amounts of statements: text in major units ("12.50") to integer minor
units by the currency's exponent, vectorized with numpy and never through float.

A value with more decimals than the scale allows is refused, never rounded:

>>> decimal_units(["12.50", "-0.07", "3"], 2, "bill.csv", [2, 3, 4], "amount").tolist()
[1250, -7, 300]
>>> decimal_units(["12.505"], 2, "bill.csv", [2], "amount")
Traceback (most recent call last):
...
posfast.errors.SettlementError: posfast: settlement file bill.csv, line 2, column amount: '12.505' has 3 decimals; this amount has at most 2 (minor units of its currency): a statement is never rounded
"""
from __future__ import annotations

import numpy as np

from ..errors import SettlementError

__all__ = ["FEE_SCALE", "decimal_units", "exponent_of", "parse_rate"]

#: Fees are kept in thousandths of a minor unit: WeChat Pay bills give fees to five
#: decimals of a yuan (0.07500 is 7.5 fen), and a fee is never rounded to fit.
FEE_SCALE = 3
_DIGITS = 18


def exponent_of(currency: int) -> int:
    """Decimal places of an ISO 4217 numeric currency (2 when posfast does not know it)."""
    from ..receipt import CURRENCIES
    return CURRENCIES.get(int(currency), ("", 2))[1]


def _refuse(path, line, column, value, why):
    return SettlementError("posfast: settlement file %s, line %s, column %s: %r %s"
                           % (path, line, column, value, why), path, line, column, value)


def decimal_units(values, exponent, path, lines, column, blank=None) -> np.ndarray:
    """int64 of each decimal text value times 10**exponent, exact.

    `exponent` is an int or an array (one per value: the row's currency).  A leading
    ``+``/``-`` is allowed; `blank` (an int) stands for empty cells, else they are
    refused.  Refusals name file, line, column and the value as written."""
    n = len(values)
    if not n:
        return np.zeros(0, np.int64)
    arr = np.char.strip(np.asarray(values, dtype=str))
    exps = np.broadcast_to(np.asarray(exponent, np.int64), (n,))
    width = max(arr.dtype.itemsize // 4, 1)
    codes = arr.view(np.uint32).reshape(n, width) if arr.dtype.itemsize else np.zeros((n, 1),
                                                                                        np.uint32)
    length = np.char.str_len(arr).astype(np.int64)
    empty = length == 0
    if empty.any() and blank is None:
        i = int(np.argmax(empty))
        raise _refuse(path, lines[i], column, values[i], "is empty; an amount is needed")
    sign = np.where(codes[:, 0] == ord("-"), -1, 1)
    signed = (codes[:, 0] == ord("-")) | (codes[:, 0] == ord("+"))
    col = np.arange(width)
    inside = col[None, :] < length[:, None]
    body = inside & ~((col[None, :] == 0) & signed[:, None])
    digit = (codes >= ord("0")) & (codes <= ord("9")) & body
    dot = (codes == ord(".")) & body
    bad = (body & ~digit & ~dot).any(axis=1) | (dot.sum(axis=1) > 1) | (~empty & ~digit.any(axis=1))
    if bad.any():
        i = int(np.argmax(bad))
        raise _refuse(path, lines[i], column, values[i], "is not a decimal amount (write 12.50)")
    dot_at = np.where(dot.any(axis=1), np.argmax(dot, axis=1), length)
    decimals = np.where(dot.any(axis=1), length - dot_at - 1, 0)
    over = decimals > exps
    if over.any():
        i = int(np.argmax(over))
        raise _refuse(path, lines[i], column, values[i], "has %d decimals; this amount has at most "
                      "%d (minor units of its currency): a statement is never rounded"
                      % (decimals[i], exps[i]))
    places = np.where(col[None, :] < dot_at[:, None], dot_at[:, None] - 1 - col[None, :],
                      dot_at[:, None] - col[None, :]) + exps[:, None]
    if ((places >= _DIGITS) & digit & (codes != ord("0"))).any():
        i = int(np.argmax(((places >= _DIGITS) & digit & (codes != ord("0"))).any(axis=1)))
        raise _refuse(path, lines[i], column, values[i], "is too large an amount")
    powers = np.power(10, np.clip(places, 0, _DIGITS - 1), dtype=np.int64)
    value = np.where(digit, (codes.astype(np.int64) - ord("0")) * powers, 0).sum(axis=1)
    out = sign * value
    if blank is not None:
        out[empty] = blank
    return out


def parse_rate(rate) -> int:
    """A fee rate in parts per million: ``"0.38%"`` -> 3800, ``0.006`` or ``"0.006"`` -> 6000.

    >>> parse_rate("0.38%"), parse_rate("0.6%"), parse_rate("0.0025")
    (3800, 6000, 2500)
    """
    from decimal import Decimal, InvalidOperation
    text = str(rate).strip()
    percent = text.endswith("%")
    try:
        value = Decimal(text.rstrip("%").strip()) * (10_000 if percent else 1_000_000)
    except InvalidOperation:
        raise ValueError("posfast: fee rate %r is not a rate (write 0.38%% or 0.0038)" % (rate,)) \
            from None
    if value != value.to_integral_value() or value < 0:
        raise ValueError("posfast: fee rate %r is finer than a millionth, or negative" % (rate,))
    return int(value)
