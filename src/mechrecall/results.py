"""Typed results: frozen dataclasses that round-trip through JSON with a schema version.

Every analysis returns a :class:`Result` subclass. ``to_json`` writes its fields (nested
dataclasses, tuples, dicts and lists as JSON arrays and objects) with the class's ``SCHEMA``
number; ``from_json`` rebuilds the same object, converting each value to its field's annotated
type, and refuses another schema version with an error that says what to rerun.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, ClassVar, TypeVar

from mechrecall.errors import ArtifactError

T = TypeVar("T")


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def _decode(kind: Any, value: Any) -> Any:
    origin = typing.get_origin(kind)
    if kind is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _decode(option, value)
            except (TypeError, ValueError, KeyError):
                continue
        raise ValueError(f"{value!r} fits none of {options}")
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise TypeError(f"expected an object for {kind.__name__}, got {type(value).__name__}")
        hints = typing.get_type_hints(kind)
        return kind(**{f.name: _decode(hints[f.name], value[f.name]) for f in dataclasses.fields(kind) if f.init})
    if origin is tuple:
        arguments = typing.get_args(kind)
        if not isinstance(value, list):
            raise TypeError(f"expected an array, got {type(value).__name__}")
        if len(arguments) == 2 and arguments[1] is Ellipsis:
            return tuple(_decode(arguments[0], v) for v in value)
        return tuple(_decode(a, v) for a, v in zip(arguments, value, strict=True))
    if origin is list:
        (item,) = typing.get_args(kind) or (Any,)
        if not isinstance(value, list):
            raise TypeError(f"expected an array, got {type(value).__name__}")
        return [_decode(item, v) for v in value]
    if origin is dict:
        key, item = typing.get_args(kind) or (str, Any)
        if not isinstance(value, dict):
            raise TypeError(f"expected an object, got {type(value).__name__}")
        return {_decode(key, k): _decode(item, v) for k, v in value.items()}
    if kind is float:
        if value is None:
            return math.nan
        if value in ("inf", "-inf"):
            return float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"expected a number, got {value!r}")
        return float(value)
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, str) and value.lstrip("-").isdigit():
                return int(value)  # a dict key
            raise TypeError(f"expected an integer, got {value!r}")
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise TypeError(f"expected true or false, got {value!r}")
        return value
    if kind is str:
        if not isinstance(value, str):
            raise TypeError(f"expected a string, got {value!r}")
        return value
    return value


@dataclasses.dataclass(frozen=True)
class Result:
    """Base of every analysis result. Subclasses are frozen dataclasses and set ``SCHEMA``
    (bump it whenever a field changes meaning, so older files are refused, not misread)."""

    SCHEMA: ClassVar[int] = 1

    def to_json(self) -> dict[str, Any]:
        return {"schema": self.SCHEMA, "result": type(self).__name__, **_encode(self)}

    @classmethod
    def from_json(cls: type[T], data: Any, source: str = "the result") -> T:
        if not isinstance(data, dict) or data.get("result") != cls.__name__:  # type: ignore[attr-defined]
            raise ArtifactError(f"{source} is not a {cls.__name__}: run the analysis that makes it again")
        if data.get("schema") != cls.SCHEMA:  # type: ignore[attr-defined]
            raise ArtifactError(
                f"{source} has schema {data.get('schema')} but this mechrecall reads {cls.__name__} schema "
                f"{cls.SCHEMA}: run the analysis that makes it again"  # type: ignore[attr-defined]
            )
        try:
            return _decode(cls, {k: v for k, v in data.items() if k not in ("schema", "result")})
        except (TypeError, ValueError, KeyError) as error:
            raise ArtifactError(f"{source} does not hold a valid {cls.__name__} ({error}): run the analysis again") from None


def decode(kind: type[T], value: Any) -> T:
    """``value`` (parsed JSON) converted to the annotated type ``kind``."""
    return _decode(kind, value)
