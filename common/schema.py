"""Strict, type-hint driven conversion of untrusted plain data into typed values.

Used by the wire decoder (msgpack headers) and the config loader (YAML). A ``Converter`` is
built once per annotated type; calling it on a value returns the value in its typed form
(tuples for sequences, record dataclasses for mappings) or raises ``SchemaError`` naming the
field path, what was expected and what was found. Nothing here imports or evaluates anything
named by the data.
"""

from __future__ import annotations

import dataclasses
import math
import reprlib
import types
import typing
from collections.abc import Callable
from typing import Any, Literal

Converter = Callable[[Any, str], Any]


class SchemaError(ValueError):
    """A value does not match its declared type; the message names the field path."""


_REPR = reprlib.Repr()
_REPR.maxlevel = 4  # a value nested 1000 deep (msgpack allows it) must not exhaust the stack
_REPR.maxstring = _REPR.maxother = 60


def describe(value: Any) -> str:
    text = _REPR.repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _scalar(kind: type, name: str) -> Converter:
    def convert(value: Any, path: str) -> Any:
        if type(value) is kind:
            return value
        raise SchemaError(f"{path}: expected {name}, got {describe(value)}")

    return convert


def _float(value: Any, path: str) -> float:
    if type(value) is int:
        return float(value)
    if type(value) is float and math.isfinite(value):
        return value
    raise SchemaError(f"{path}: expected a finite number, got {describe(value)}")


def _literal(choices: tuple[Any, ...]) -> Converter:
    allowed = ", ".join(repr(c) for c in choices)

    def convert(value: Any, path: str) -> Any:
        for choice in choices:
            if type(value) is type(choice) and value == choice:
                return value
        raise SchemaError(f"{path}: got {describe(value)}; allowed: {allowed}")

    return convert


def _optional(inner: Converter) -> Converter:
    def convert(value: Any, path: str) -> Any:
        return None if value is None else inner(value, path)

    return convert


def _union(options: list[tuple[type, Converter]], names: str) -> Converter:
    def convert(value: Any, path: str) -> Any:
        for _, conv in options:
            try:
                return conv(value, path)
            except SchemaError:
                continue
        raise SchemaError(f"{path}: expected {names}, got {describe(value)}")

    return convert


def _sequence(inner: Converter, max_len: int | None) -> Converter:
    def convert(value: Any, path: str) -> tuple:
        if not isinstance(value, (list, tuple)):
            raise SchemaError(f"{path}: expected a list, got {describe(value)}")
        if max_len is not None and len(value) > max_len:
            raise SchemaError(f"{path}: list of {len(value)} items exceeds {max_len}")
        return tuple(inner(v, f"{path}[{i}]") for i, v in enumerate(value))

    return convert


def _mapping(inner: Converter) -> Converter:
    def convert(value: Any, path: str) -> dict:
        if not isinstance(value, dict):
            raise SchemaError(f"{path}: expected a mapping, got {describe(value)}")
        out = {}
        for k, v in value.items():
            if type(k) is not str:
                raise SchemaError(f"{path}: keys must be strings, got {describe(k)}")
            out[k] = inner(v, f"{path}.{k}")
        return out

    return convert


def record_converter(cls: type) -> Converter:
    """Converter for a dataclass given as a mapping with exactly its fields (by name)."""
    fields = fields_of(cls)

    def convert(value: Any, path: str) -> Any:
        if isinstance(value, cls):
            return value
        if not isinstance(value, dict):
            raise SchemaError(f"{path}: expected a mapping for {cls.__name__}, got {describe(value)}")
        unknown = set(value) - set(fields)
        if unknown:
            key = sorted(map(str, unknown))[0]
            where = f"{path}.{key}" if path else key
            raise SchemaError(f"{where}: unknown key; allowed: {', '.join(fields)}")
        kwargs = {}
        for name, (conv, has_default) in fields.items():
            sub = f"{path}.{name}" if path else name
            if name in value:
                kwargs[name] = conv(value[name], sub)
            elif not has_default:
                raise SchemaError(f"{sub}: missing")
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:  # __post_init__ validation names its own key
            if isinstance(exc, SchemaError):
                raise
            raise SchemaError(str(exc)) from None

    return convert


_CACHE: dict[Any, Converter] = {}


def converter(tp: Any, max_len: int | None = None) -> Converter:
    """Build (or fetch) the converter for an annotation."""
    key = (tp, max_len)
    if key in _CACHE:
        return _CACHE[key]
    conv = _build(tp, max_len)
    _CACHE[key] = conv
    return conv


def _build(tp: Any, max_len: int | None) -> Converter:
    if tp is int:
        return _scalar(int, "an integer")
    if tp is float:
        return _float
    if tp is str:
        return _scalar(str, "a string")
    if tp is bool:
        return _scalar(bool, "true or false")
    if tp is bytes:
        return _scalar(bytes, "bytes")
    if tp is Any:
        raise TypeError("Any is not allowed in a schema: say what the field holds")
    if dataclasses.is_dataclass(tp):
        return record_converter(tp)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Literal:
        return _literal(args)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        if len(members) == 1:
            inner = converter(members[0], max_len)
        else:
            names = " or ".join(_name(a) for a in members)
            inner = _union([(a, converter(a, max_len)) for a in members], names)
        return _optional(inner) if len(members) < len(args) else inner
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return _sequence(converter(args[0], max_len), max_len)
    if origin is dict and args and args[0] is str:
        return _mapping(converter(args[1], max_len))
    raise TypeError(f"unsupported annotation in a schema: {tp!r}")


def _name(tp: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def fields_of(cls: type) -> dict[str, tuple[Converter, bool]]:
    """Field name → (converter, has a default) for a dataclass, in declaration order."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        out[f.name] = (converter(hints[f.name]), has_default)
    return out


def to_plain(value: Any) -> Any:
    """Typed value → plain data (dicts, lists, scalars) for msgpack or YAML."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    return value
