"""Frozen, validated config dataclasses: building them from suite values, checking and dumping them.

A compressor's config is a ``@dataclass(frozen=True)`` that checks its own values in ``__post_init__``
(with :func:`check`). :func:`build_config` turns plain suite values into one, with "did you mean" for
unknown keys and type checks taken from the annotations, so bad grid values fail before anything runs.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union

from .errors import ConfigError, suggest

__all__ = [
    "build_config",
    "config_to_dict",
    "config_identity",
    "config_defaults",
    "ADDED_SETTING",
    "check",
    "one_of",
    "ConfigError",
    "EmptyConfig",
    "SettingDoc",
    "setting_docs",
    "HELP",
    "RANGE",
]

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
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
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
#: ``field(default=..., metadata=ADDED_SETTING)`` (or ``default_factory=dict``).
ADDED_SETTING = {"b2s_bench.id": "when-set"}


def config_to_dict(config: Any) -> dict[str, Any]:
    """A config as JSON-ready plain values (tuples become lists)."""
    return {f.name: _plain(getattr(config, f.name)) for f in dataclasses.fields(config)}


def _default(f: dataclasses.Field[Any]) -> Any:
    """A field's default (a ``default_factory``'s value for dicts and lists), or ``MISSING``."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def config_defaults(cls: type) -> dict[str, Any]:
    """A config class's defaults as plain values: its instance built with no settings, or, where its
    defaults do not validate alone (a rule needs a setting), each field's own default."""
    try:
        return config_to_dict(cls())
    except Exception:  # any check of __post_init__: fall back to the fields
        return {f.name: _plain(_default(f)) for f in dataclasses.fields(cls)}


def config_identity(config: Any) -> dict[str, Any]:
    """What of a config joins cell ids: every setting, except added settings left at their default."""
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.metadata.get("b2s_bench.id") == "when-set" and value == _default(f):
            continue
        out[f.name] = _plain(value)
    return out


# -- documenting settings (``b2s-bench show``, ``ls -v``) ------------------------------------------------------
#: Field metadata keys a config may set: one line of help (when the docstring has none), and the
#: allowed range of a number, as shown to users, e.g. ``field(default=8, metadata={"range": "2..8, 16, 32"})``.
HELP, RANGE = "help", "range"
SUMMARY = 100  # characters of help in one table row


@dataclasses.dataclass(frozen=True)
class SettingDoc:
    """One setting of a config class, as ``show`` and ``ls -v`` print it.

    Attributes:
        name: the setting's key.
        type: its type in words ("int", "float or null", "list of int", "choice").
        default: its default as YAML would write it ("required" when there is none).
        allowed: the allowed values: Literal choices, true/false, a declared range ("" when unknown).
        help: the setting's description (the docstring's entry, else the ``help`` metadata).
    """

    name: str
    type: str
    default: str
    allowed: str
    help: str

    @property
    def summary(self) -> str:
        """The help's first sentence, at most :data:`SUMMARY` characters: one line for tables."""
        first = re.split(r"(?<=\.)\s", self.help, maxsplit=1)[0].rstrip(".")
        return first if len(first) <= SUMMARY else first[: SUMMARY - 1].rstrip() + "…"


def _yaml_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_yaml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_yaml_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def _type_name(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return "any"
    if origin in (Union, types.UnionType):
        inner = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(inner) + (" or null" if type(None) in args else "")
    if origin is Literal:
        return "choice"
    if origin in (tuple, list) or hint in (tuple, list):
        fixed = args and not (len(args) == 2 and args[1] is Ellipsis)
        return f"list of {len(args)}" if fixed else f"list of {_type_name(args[0]) if args else 'any'}"
    if origin in (dict, Mapping) or hint is dict:
        return "mapping"
    return getattr(hint, "__name__", str(hint))


def _allowed(hint: Any, metadata: Mapping[str, Any]) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    parts = [str(metadata[RANGE])] if RANGE in metadata else []
    if origin in (Union, types.UnionType):
        for arg in args:
            if arg is not type(None):
                inner = _allowed(arg, {})
                if inner:
                    parts.append(inner)
        if type(None) in args and parts:
            parts.append("null")
    elif origin is Literal:
        parts.append(", ".join(_yaml_value(a) for a in args))
    elif hint is bool:
        parts.append("true, false")
    return ", ".join(parts)


_SECTION = re.compile(r"^(\s*)(Attributes|Args|Arguments|Settings|Options):\s*$")
_ENTRY = re.compile(r"^([A-Za-z_]\w*(?:\s*(?:/|,)\s*[A-Za-z_]\w*)*)\s*(?:\([^)]*\))?:\s+(.*)$")


def _section_entries(lines: list[str], fields: set[str]) -> dict[str, str]:
    """``name: help`` entries of Google-style "Attributes:"/"Args:" sections (``a / b:`` and ``a, b:`` share one)."""
    out: dict[str, str] = {}
    i = 0
    while i < len(lines):
        section = _SECTION.match(lines[i])
        i += 1
        if not section:
            continue
        indent: int | None = None
        names: list[str] = []
        text: list[str] = []
        while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > len(section[1])):
            line = lines[i]
            depth = len(line) - len(line.lstrip())
            entry = _ENTRY.match(line.strip())
            if line.strip() and entry and (indent is None or depth <= indent):
                for name in names:
                    out.setdefault(name, " ".join(text))
                indent, text = depth, [entry[2]]
                names = [n for n in re.split(r"\s*[/,]\s*", entry[1]) if n in fields]
            elif line.strip():
                text.append(line.strip())
            i += 1
        for name in names:
            out.setdefault(name, " ".join(text))
    return out


def _inline_entries(lines: list[str], fields: set[str]) -> dict[str, str]:
    """``name: help; other: help`` written in a docstring's prose (only where every name is a field)."""
    out: dict[str, str] = {}
    for paragraph in re.split(r"\n\s*\n", "\n".join(lines)):
        for part in re.split(r";\s+", " ".join(paragraph.split())):
            entry = _ENTRY.match(part.strip())
            names = re.split(r"\s*[/,]\s*", entry[1]) if entry else []
            if names and all(n in fields for n in names):
                for name in names:
                    out.setdefault(name, entry[2].rstrip("."))  # type: ignore[index]
    return out


def _comments(cls: type, fields: set[str]) -> dict[str, str]:
    """Trailing ``# comments`` of field lines in the class's source (none when the source is not at hand)."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    out: dict[str, str] = {}
    for match in re.finditer(r"^\s+(\w+)\s*:[^#\n]*#\s*(.+)$", source, re.MULTILINE):
        if match[1] in fields:
            out.setdefault(match[1], match[2].strip())
    return out


def setting_docs(cls: type) -> list[SettingDoc]:
    """Each setting of a config dataclass with its type, default, allowed values and help.

    Help comes from the class docstring (Google-style "Attributes:" or "Args:" entries, or
    ``name: help;`` in its prose), else from the field's ``help`` metadata, else from a trailing
    comment on the field's line. Allowed values come from ``Literal`` types, ``bool`` and the
    ``range`` metadata.
    """
    fields = [f for f in dataclasses.fields(cls) if f.init]
    names = {f.name for f in fields}
    hints = typing.get_type_hints(cls)
    lines = (inspect.getdoc(cls) or "").splitlines()
    found = [_section_entries(lines, names), _inline_entries(lines, names)]
    comments = _comments(cls, names)
    docs = []
    for f in fields:
        helps = [d[f.name] for d in found if d.get(f.name)] + ([str(f.metadata[HELP])] if HELP in f.metadata else [])
        text = helps[0] if helps else comments.get(f.name, "")
        if f.default is not dataclasses.MISSING:
            default = _yaml_value(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = _yaml_value(f.default_factory())
        else:
            default = "required"
        hint = hints.get(f.name, Any)
        docs.append(SettingDoc(f.name, _type_name(hint), default, _allowed(hint, f.metadata), text))
    return docs
