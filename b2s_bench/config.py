"""Frozen, validated config dataclasses: building them from suite values, checking and dumping them.

A compressor's config is a ``@dataclass(frozen=True)`` that checks its own values in ``__post_init__``
(with :func:`check`). :func:`build_config` turns plain suite values into one, with "did you mean" for
unknown keys and type checks taken from the annotations, so bad grid values fail before anything runs.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union

from .errors import ConfigError, suggest

__all__ = ["build_config", "config_to_dict", "config_identity", "ADDED_SETTING", "check", "one_of", "ConfigError",
           "EmptyConfig"]

C = TypeVar("C")


@dataclasses.dataclass(frozen=True)
class EmptyConfig:
    """A config with no settings."""


def check(condition: bool, message: str, key: str | None = None) -> None:
    """Raise a ConfigError(message) unless condition holds. Use in ``__post_init__``, never ``assert``."""
    if not condition:
        raise ConfigError(message, key)


def one_of(value: Any, choices: typing.Iterable[Any], key: str) -> None:
    choices = list(choices)
    if value not in choices:
        near = suggest(str(value), [str(c) for c in choices])
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise ConfigError(f"{key} must be one of {choices}, got {value!r}{hint}", key)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} matches none of {args}", key)
    if origin is Literal:
        one_of(value, args, key)
        return value
    if origin in (tuple, list) or hint in (tuple, list):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}", key)
        if args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(args) != len(value):
                raise ConfigError(f"{key} must have {len(args)} items, got {len(value)}", key)
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(args, value)))
        inner = args[0] if args else Any
        return tuple(_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value))
    if origin in (dict, Mapping) or hint in (dict,):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a mapping, got {value!r}", key)
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}", key)
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key} must be an integer, got {value!r}", key)
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}", key)
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}", key)
        return value
    return value


def build_config(cls: type[C], values: Mapping[str, Any] | None = None, owner: str = "") -> C:
    """Build and validate a config dataclass from plain values.

    Raises:
        ConfigError: naming the bad key, with suggestions for unknown keys.
    """
    values = dict(values or {})
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    who = f" of {owner}" if owner else ""
    for key in values:
        if key not in fields:
            near = suggest(key, fields)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ConfigError(f"unknown setting {key!r}{who}{hint} (settings: {', '.join(fields) or 'none'})", key)
    coerced = {k: _coerce(v, hints.get(k, Any), k) for k, v in values.items()}
    try:
        return cls(**coerced)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"bad settings{who}: {e}") from None


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


#: Field metadata for a setting added to an existing compressor: at its default it stays out of
#: cell ids, so adding it does not invalidate the records made before it existed. Use as
#: ``field(default=..., metadata=ADDED_SETTING)``.
ADDED_SETTING = {"b2s_bench.id": "when-set"}


def config_to_dict(config: Any) -> dict[str, Any]:
    """A config as JSON-ready plain values (tuples become lists)."""
    return {f.name: _plain(getattr(config, f.name)) for f in dataclasses.fields(config)}


def config_identity(config: Any) -> dict[str, Any]:
    """What of a config joins cell ids: every setting, except added settings left at their default."""
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.metadata.get("b2s_bench.id") == "when-set" and f.default is not dataclasses.MISSING and value == f.default:
            continue
        out[f.name] = _plain(value)
    return out
