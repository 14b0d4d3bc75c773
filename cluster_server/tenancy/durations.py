"""Durations as Coopr writes them in ``administration.leaseduration``: a whole number of
milliseconds (a number, or a string of digits), or a string such as "2d", "4h", "1h30m", "45s".
0 means unlimited wherever a lease takes one."""

import re

from cluster_server.errors import Unprocessable, ValidationError

UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
PART = re.compile(r"(\d+)(ms|s|m|h|d|w)")
WHOLE = re.compile(r"(?:\d+(?:ms|s|m|h|d|w))+|\d+")
RULE = "milliseconds, or a duration such as 2d, 4h, 1h30m, 45s"
MAX_MS = 100 * 365 * UNITS["d"]  # a century: beyond it a timestamp stops being a number


def to_ms(value, field="duration"):
    """Milliseconds of ``value``; a clear 400 naming ``field`` when it is none."""
    if isinstance(value, bool):
        value = None
    ms = None
    if isinstance(value, (int, float)) and value >= 0:
        ms = int(value)
    elif isinstance(value, str) and WHOLE.fullmatch(value.strip()):
        text = value.strip()
        ms = int(text) if text.isdigit() else sum(int(n) * UNITS[unit]
                                                  for n, unit in PART.findall(text))
    if ms is not None and ms > MAX_MS:
        # 422: the form fits (a string of digits is a duration); the length cannot be used.
        raise Unprocessable(f"{field}: {value!r} is longer than a century",
                              {"field": field, "reason": "too long"})
    if ms is not None:
        return ms
    raise ValidationError(f"{field}: {value!r} is not a duration ({RULE})",
                          {"field": field, "reason": "not a duration"})


def describe(ms):
    """A short human form of a duration: 2d, 4h, 1h30m, 45s (0 is 'unlimited')."""
    if not ms:
        return "unlimited"
    out, rest = [], int(ms)
    for unit in ("d", "h", "m", "s"):
        count, rest = divmod(rest, UNITS[unit])
        if count:
            out.append(f"{count}{unit}")
    if rest or not out:
        out.append(f"{rest}ms")
    return "".join(out)
