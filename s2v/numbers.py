"""One check for every number a user types, whoever passes it on (the pipeline, the CLI, the app).

A number arrives as JSON from an API client, as a float from a slider or as an int from
argparse; NaN and infinity slip past comparisons, and `True` is an int to Python. Each
check returns the value in its proper type or raises one `S2VError` that names the field
as the user knows it ("--steps", "Denoising steps", "num_inference_steps"). Zero is a
value like any other: it passes wherever the range includes it.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

from .errors import S2VError


def whole_number(value, field: str, low: int, high: int | None = None, *, whole_floats: bool = False) -> int:
    """`value` as an int in [low, high]. With `whole_floats`, 25.0 counts as 25 (a slider or a JSON client may
    send either); without it only ints do, as a Python caller's typo should not pass silently."""
    if not is_whole(value, low, high, whole_floats=whole_floats):
        raise S2VError(f"{field} must be a whole number {_range(low, high)}, not {_shown(value)}.")
    return int(value)


def is_whole(value, low: int, high: int | None = None, *, whole_floats: bool = False) -> bool:
    """Whether `whole_number` would accept `value`, for checks whose message says more (such as 8k+1)."""
    kinds = Real if whole_floats else Integral
    return not isinstance(value, bool) and isinstance(value, kinds) and _whole(value) and _within(value, low, high)


def real_number(value, field: str, low: float, high: float | None = None) -> float:
    """`value` as a finite float in [low, high]."""
    if not _finite(value) or not _within(value, low, high):
        raise S2VError(f"{field} must be a number {_range(low, high)}, not {_shown(value)}.")
    return float(value)


def _finite(value) -> bool:
    """A real number that fits a float; ints past 1e308 overflow `math.isfinite` and count as not finite."""
    if isinstance(value, bool) or not isinstance(value, Real):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _whole(value: Real) -> bool:
    return isinstance(value, Integral) or (math.isfinite(value) and float(value).is_integer())


def _within(value: Real, low: float, high: float | None) -> bool:
    return value >= low and (high is None or value <= high)


def _range(low: float, high: float | None) -> str:
    return f"of at least {low}" if high is None else f"from {low} to {high}"


def _shown(value) -> str:
    """The offending value, short enough for a one-line message."""
    if isinstance(value, Integral) and not isinstance(value, bool) and abs(value) > 10**40:
        return "a number of more than 40 digits"  # str() of a huge int is slow, and refused past 4300 digits
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."
