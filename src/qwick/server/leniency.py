"""What OpenAI's published contract lets clients send that strict pydantic types would refuse.

- `null` for an optional field that cannot hold it means "the default" (the contract marks most optional
  fields nullable: `"n": null`, `"stream": null`); a required field stays required.
- A whole number written as a float (`"n": 2.0`, `"seed": 1.0`) is taken for an integer field; `1.5` is still
  refused by the field's own validation, which names it.
"""

from __future__ import annotations

import functools
import types
import typing
from typing import Any

from pydantic import BaseModel, model_validator


class Lenient(BaseModel):
    """Base of request bodies and their parts: applies the two rules above before validation."""

    @model_validator(mode="before")
    @classmethod
    def _openai_leniency(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        defaulted, integers = _field_kinds(cls)
        out = {}
        for key, value in data.items():
            if value is None and key in defaulted:
                continue
            if key in integers and type(value) is float and value.is_integer():
                value = int(value)
            out[key] = value
        return out


@functools.cache
def _field_kinds(cls: type[BaseModel]) -> tuple[frozenset[str], frozenset[str]]:
    """(names whose null means the default, names of integer fields), by the names clients send (aliases)."""
    defaulted, integers = set(), set()
    for name, info in cls.model_fields.items():
        key = info.alias or name
        options = _options(info.annotation)
        if not info.is_required() and type(None) not in options:
            defaulted.add(key)
        if int in options and float not in options:
            integers.add(key)
    return frozenset(defaulted), frozenset(integers)


def _options(annotation: Any) -> tuple[Any, ...]:
    """The types a union allows (a plain type is a union of one)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)
