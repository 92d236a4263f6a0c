"""Helpers shared by the frozen dataclass configs of every stage."""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def require(cond: bool, message: str) -> None:
    """A config's validation step: raise ValueError(message) unless ``cond``."""
    if not cond:
        raise ValueError(message)


def to_dict(cfg: Any) -> Any:
    """A JSON-ready view of a (nested) dataclass config."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {str(k): to_dict(v) for k, v in cfg.items()}
    return cfg


def config_identity(cfg: Any) -> Any:
    """``to_dict(cfg)`` without the fields each dataclass lists in its ``RUNTIME`` (settings of where or how
    fast, not of what), at any depth: what a corpus records and hashes as its config."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        runtime = getattr(type(cfg), "RUNTIME", frozenset())
        return {f.name: config_identity(getattr(cfg, f.name)) for f in dataclasses.fields(cfg) if f.name not in runtime}
    return to_dict(cfg)


def from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
    """A (nested) frozen dataclass config from its ``to_dict`` form: lists back to tuples, nested dicts to their
    dataclasses, missing fields at their defaults. An unknown key is a ValueError."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown settings {unknown}")
    defaults = cls()
    values = {}
    for name, value in data.items():
        current = getattr(defaults, name)
        if dataclasses.is_dataclass(current) and isinstance(value, Mapping):
            value = from_dict(type(current), value)
        elif isinstance(current, tuple) and isinstance(value, list):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        values[name] = value
    return cls(**values)


def canonical_json(value: Any) -> str:
    return json.dumps(to_dict(value), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def config_hash(value: Any) -> str:
    """A stable hash of a config: the same settings give the same hash in any process."""
    return hashlib.sha256(canonical_json(value).encode("ascii")).hexdigest()[:16]


def diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted names of the settings that differ between two config dicts."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for key in sorted(set(a) | set(b)):
            out += diff_keys(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def with_overrides(cfg: T, overrides: list[str]) -> T:
    """Apply ``a.b=value`` overrides (command-line strings, read with literal_eval) to a frozen dataclass config."""
    settings = {}
    for item in overrides:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            raise ValueError(f"override {item!r} must look like name=value")
        settings[name] = parse_value(raw)
    return with_settings(cfg, settings)


def parse_value(raw: str) -> Any:
    """A command-line value: a Python literal (3, 0.5, True, (1, 2), 'x') or, failing that, the string itself."""
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def with_settings(cfg: T, settings: Mapping[str, Any]) -> T:
    """Apply ``{"a.b": value}`` settings to a frozen dataclass config, each type-checked against the field's
    current value (ints widen to floats, lists become tuples; nothing else converts). All settings are applied
    before the configs validate themselves, so their order does not matter. Every problem is a ValueError
    naming the setting."""
    return _apply(cfg, {tuple(name.split(".")): value for name, value in settings.items()}, "")


def _apply(cfg: Any, settings: dict[tuple[str, ...], Any], prefix: str) -> Any:
    if not (dataclasses.is_dataclass(cfg) and not isinstance(cfg, type)):
        raise ValueError(f"setting {prefix.rstrip('.')!r} is not a group of settings")
    names = {f.name for f in dataclasses.fields(cfg)}
    changes: dict[str, Any] = {}
    groups: dict[str, dict[tuple[str, ...], Any]] = {}
    for path, value in settings.items():
        name = prefix + ".".join(path)
        if path[0] not in names:
            raise ValueError(f"unknown setting {name!r}; known here: {sorted(names)}")
        if len(path) == 1:
            changes[path[0]] = _typed(getattr(cfg, path[0]), value, name)
        else:
            groups.setdefault(path[0], {})[path[1:]] = value
    for head, sub in groups.items():
        changes[head] = _apply(changes.get(head, getattr(cfg, head)), sub, f"{prefix}{head}.")
    try:
        return dataclasses.replace(cfg, **changes)
    except TypeError as err:  # a config refusing a value in its own checks' arithmetic, say
        raise ValueError(f"settings {sorted(changes)} of {type(cfg).__name__}: {err}") from None


def _typed(current: Any, value: Any, name: str) -> Any:
    if isinstance(current, tuple) and isinstance(value, list):
        value = tuple(value)
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if current is None or isinstance(value, type(current)) and isinstance(value, bool) == isinstance(current, bool):
        return value
    raise ValueError(f"setting {name}={value!r}: expected {type(current).__name__}, got {type(value).__name__}")
