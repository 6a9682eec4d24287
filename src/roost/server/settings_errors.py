"""A setting ``roost serve`` cannot take, said in words: which one, where it was set, what it
takes.

    explained(error, values, sources, Settings)
    # InvalidConfig: invalid port='abc': takes a whole number from 0 to 65535 (set by ROOST_PORT)

msgspec says what failed in its own terms ("Expected `int` >= 1 - at `$.max_connections`",
"Object contains unknown field `portt`"); a person who typed the setting wants its name, the
file, variable or flag it came from, and the whole rule (both ends of a range), which this
reads from the settings struct itself so the words cannot drift from the checks.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping

import msgspec

from roost.errors import InvalidConfig

_AT = re.compile(r" - at `\$\.(\w+)")
_UNKNOWN = re.compile(r"unknown field `(\w+)`")


def explained(
    error: msgspec.ValidationError,
    values: Mapping[str, object],
    sources: Mapping[str, str],
    settings: type[msgspec.Struct],
) -> InvalidConfig:
    """``error`` (converting ``values`` to ``settings``) as one ``InvalidConfig``; ``sources``
    says where each value came from ("a.toml [server]", "ROOST_PORT", "--port")."""
    text = str(error)
    fields = {f.name: f.type for f in msgspec.inspect.type_info(settings).fields}  # type: ignore[attr-defined]
    unknown = _UNKNOWN.search(text)
    if unknown:
        name = unknown.group(1)
        near = difflib.get_close_matches(name, list(fields), n=1)
        hint = f"; did you mean {near[0]}?" if near else ""
        where = sources.get(name, "the settings")
        return InvalidConfig(name, values.get(name), f"is not a setting (in {where}){hint}")
    at = _AT.search(text)
    name = at.group(1) if at else ""
    if name not in fields:
        return InvalidConfig("settings", dict(values), text)
    where = f" (set by {sources[name]})" if name in sources else ""
    return InvalidConfig(name, values.get(name), f"takes {_rule(fields[name])}{where}")


def _rule(kind: object) -> str:
    """What a setting of type ``kind`` (msgspec's type info) takes, in words."""
    if isinstance(kind, msgspec.inspect.UnionType):
        parts = [t for t in kind.types if not isinstance(t, msgspec.inspect.NoneType)]
        rules = " or ".join(_rule(t) for t in parts)
        return f"{rules}, or nothing" if len(parts) < len(kind.types) else rules
    if isinstance(kind, msgspec.inspect.IntType):
        low = kind.ge if kind.ge is not None else None if kind.gt is None else kind.gt + 1
        high = kind.le if kind.le is not None else None if kind.lt is None else kind.lt - 1
        if low is not None and high is not None:
            return f"a whole number from {low} to {high}"
        if low is not None:
            return f"a whole number of at least {low}"
        return "a whole number"
    if isinstance(kind, msgspec.inspect.BoolType):
        return "true or false"
    if isinstance(kind, msgspec.inspect.StrType):
        return "a string"
    if isinstance(kind, msgspec.inspect.ListType):
        return f"a list of {_rule(kind.item_type).removeprefix('a ')}s"
    return "a value of another type"
