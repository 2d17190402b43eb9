"""Typed loading of frozen-dataclass config trees from YAML, with dotted-path errors.

The schema lives in `lit.config`; this module knows nothing about it. It turns plain
data (parsed with `yaml.safe_load`) into dataclass instances, rejecting unknown keys and
wrong types with the file and dotted key path, and applies `section.key=value` overrides.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from lit.errors import UserError

T = TypeVar("T")
_YAML11_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


class ConfigError(UserError, ValueError):
    """A config value a user must fix: names the source, the dotted key and the problem."""

    label = "config error"

    def __init__(self, source: str, key: str, message: str) -> None:
        self.source, self.key, self.detail = source, key, message
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{key or '<root>'}: {message}")


def check(cond: bool, key: str, message: str) -> None:
    """Raise a ConfigError for `key` (relative to the section validating it) unless `cond` holds."""
    if not cond:
        raise ConfigError("", key, message)


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin is not None:
        return f"{getattr(origin, '__name__', origin)}[{', '.join(_type_name(a) for a in get_args(tp))}]"
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, source: str, key: str) -> Any:
    """Check `value` against the annotation `tp` and return it converted (tuples, dataclasses)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        cls = typing.cast("type[Any]", tp)  # an annotation: the dataclass itself, never an instance
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(source, key, f"expected a mapping for section {cls.__name__}, got {value!r}")
        return from_dict(cls, value, source, key)
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(source, key, f"{value!r} is not one of {_type_name(tp)}")
        return value
    if origin in (Union, types.UnionType):
        errors = []
        for arg in get_args(tp):
            try:
                return _convert(value, arg, source, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(source, key, f"expected {_type_name(tp)}, got {value!r}")
    if tp is type(None):
        if value is not None:
            raise ConfigError(source, key, f"expected null, got {value!r}")
        return None
    if origin in (tuple, list):
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ConfigError(source, key, f"expected a list, got {value!r}")
        (item_tp, *rest) = get_args(tp) or (Any,)
        return tuple(_convert(v, item_tp, source, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(source, key, f"expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(source, key, f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(source, key, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and _YAML11_FLOAT.match(value.strip()):
            return float(value)  # PyYAML (YAML 1.1) reads 2e-4 as a string: it lacks a dot
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(source, key, f"expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(source, key, f"expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported annotation {tp!r} at {key}")  # a schema bug, not user input


def from_dict(cls: type[T], data: dict[str, Any], source: str = "", prefix: str = "") -> T:
    """Build dataclass `cls` from `data`; unknown keys and wrong types raise ConfigError."""
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for k in data:
        if k not in names:
            raise ConfigError(source, _join(prefix, str(k)), f"unknown key; {cls.__name__} accepts: {', '.join(sorted(names))}")
    kwargs = {k: _convert(v, hints[k], source, _join(prefix, k)) for k, v in data.items()}
    try:
        obj = cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(source, prefix, str(err)) from err
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except ConfigError as err:
            raise ConfigError(source, _join(prefix, err.key), str(err).split(": ", 1)[-1]) from err
    return obj


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def to_dict(obj: Any) -> Any:
    """Plain YAML-safe data (tuples become lists) for a dataclass tree."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def parse_override(text: str) -> tuple[list[str], Any]:
    """`section.key=value` → (["section", "key"], value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError("command line", text, "an override has the form section.key=value")
    path, raw = text.split("=", 1)
    keys = [k for k in path.strip().split(".")]
    if not all(keys):
        raise ConfigError("command line", path, "empty key in the dotted path")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError("command line", path, f"cannot parse value {raw!r}: {err}") from err
    return keys, value


def apply_overrides(data: dict[str, Any], overrides: typing.Sequence[str]) -> dict[str, Any]:
    """Return a copy of plain config data with each `a.b.c=value` set (creating sections)."""
    import copy

    out = copy.deepcopy(data)
    for text in overrides:
        keys, value = parse_override(text)
        node = out
        for k in keys[:-1]:
            child = node.get(k)
            if child is None:
                child = node[k] = {}
            if not isinstance(child, dict):
                raise ConfigError("command line", ".".join(keys), f"{k!r} is not a section")
            node = child
        node[keys[-1]] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with `yaml.safe_load`; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), "", "file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(str(path), "", f"invalid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(str(path), "", f"the top level must be a mapping, got {type(data).__name__}")
    return data
