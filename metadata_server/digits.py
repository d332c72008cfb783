"""Numbers written as text: ASCII digits only, one rule for the whole service.

Python's own parsers are generous in ways a network service must not be: `int()` and
`float()` take any Unicode decimal digit ('٣' is 3), surrounding whitespace, '_'
separators and a sign, `float()` also 'nan', 'inf' and exponents, and `str.isdigit()`
says yes to '²', which `int()` then refuses (a 500 where a 400 belonged). Every number
the service reads from text (HTTP headers, query strings, tokens, the environment,
command lines, files other programs wrote) goes through here instead: decimal ASCII
digits, and for a decimal at most one '.' with digits on both sides. Anything else is
None, for the caller to report in its own words. Pure.
"""

from __future__ import annotations

import re

# Enough for any count, port, TTL or epoch second; also keeps int() far from Python's
# 4300-digit limit, which raises instead of answering.
MAX_DIGITS = 18
INTEGER_PATTERN = r"[0-9]+"
DECIMAL_PATTERN = r"[0-9]+(?:\.[0-9]+)?"
_INTEGER = re.compile(INTEGER_PATTERN)
_DECIMAL = re.compile(DECIMAL_PATTERN)


def ascii_int(text: str, *, max_digits: int = MAX_DIGITS) -> int | None:
    """`text` as a non-negative integer when it is 1..max_digits ASCII digits, else None."""
    if len(text) > max_digits or _INTEGER.fullmatch(text) is None:
        return None
    return int(text)


def ascii_decimal(text: str, *, max_digits: int = MAX_DIGITS) -> float | None:
    """`text` as a non-negative number when it is ASCII digits with an optional
    fraction (`5`, `0.25`), at most max_digits on each side of the point, else None."""
    whole, _, fraction = text.partition(".")
    if len(whole) > max_digits or len(fraction) > max_digits:
        return None
    if _DECIMAL.fullmatch(text) is None:
        return None
    return float(text)


def is_ascii_digits(text: str) -> bool:
    """Whether `text` is one or more ASCII digits (what `str.isdigit()` is often
    mistaken for)."""
    return _INTEGER.fullmatch(text) is not None


# For argparse's `type=`: it turns the ValueError into "invalid integer value: '٣'".
def integer(text: str) -> int:
    value = ascii_int(text)
    if value is None:
        raise ValueError(f"not a whole number in ASCII digits: {text!r}")
    return value


def number(text: str) -> float:
    value = ascii_decimal(text)
    if value is None:
        raise ValueError(f"not a number in ASCII digits: {text!r}")
    return value
