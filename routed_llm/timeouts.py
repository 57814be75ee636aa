"""Checking the time limits a routed model or agent is given.

The limits themselves are enforced by the router loop
(:class:`~routed_llm.routing.RoutedCall`) with ``asyncio.timeout``; this
module turns what the user passed into the form the loop reads, and rejects
bad values at construction.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from types import MappingProxyType

__all__ = ["check_seconds", "per_key_seconds"]


def check_seconds(owner: str, name: str, value: object) -> float | None:
    """Checks an optional limit in seconds.

    Args:
        owner: The class being built, for the message (``"RoutedLlm"``).
        name: The parameter's name.
        value: What the user passed: None, or a positive finite number.

    Returns:
        The limit as a float, or None for no limit.

    Raises:
        TypeError: If ``value`` is not a number.
        ValueError: If it is not positive and finite.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{owner}({name}=...) is a number of seconds or None; got {value!r}.")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(
            f"{owner}({name}={value!r}) must be a positive, finite number of seconds; pass None for no limit."
        )
    return float(value)


def per_key_seconds(owner: str, name: str, value: object, keys: Iterable[str]) -> Mapping[str, float]:
    """Checks a limit given for every key, or as a mapping of key to seconds.

    Args:
        owner: The class being built, for the message.
        name: The parameter's name.
        value: None, a number of seconds for every key, or ``{key: seconds}``
            (keys left out have no limit).
        keys: The routed keys.

    Returns:
        A read-only mapping of key to seconds, holding only limited keys.

    Raises:
        TypeError: If ``value`` or one of its values is not a number.
        ValueError: If a limit is not positive and finite, or the mapping
            names a key that is not routed.
    """
    known = list(keys)
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, Mapping):
        seconds = check_seconds(owner, name, value)
        assert seconds is not None
        return MappingProxyType(dict.fromkeys(known, seconds))
    unknown = sorted(str(key) for key in value if key not in known)
    if unknown:
        raise ValueError(
            f"{owner}({name}=...) names {unknown}, which are not routed keys "
            f"({', '.join(repr(key) for key in known)}). Use the keys of models."
        )
    limits: dict[str, float] = {}
    for key, seconds in value.items():
        checked = check_seconds(owner, f"{name}[{key!r}]", seconds)
        if checked is not None:
            limits[key] = checked
    return MappingProxyType(limits)
