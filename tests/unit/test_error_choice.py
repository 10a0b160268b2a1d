"""Which field a body with several problems reports is decided by qwick, not by pydantic's internal order."""

from __future__ import annotations

import itertools

import pytest
from pydantic import ValidationError
from pydantic_core import InitErrorDetails

from qwick.server.errors import from_validation_error

UNKNOWN = InitErrorDetails(type="extra_forbidden", loc=("txt",), input="x")
MISSING = InitErrorDetails(type="missing", loc=("text",), input={})
BAD_VALUE = InitErrorDetails(type="int_type", loc=("max_tokens",), input="x")
BAD_NESTED = InitErrorDetails(type="string_type", loc=("messages", 0, "role"), input=3)


def _reported(errors: list[InitErrorDetails]) -> str | None:
    return from_validation_error(ValidationError.from_exception_data("Body", errors)).param


@pytest.mark.parametrize("order", list(itertools.permutations([UNKNOWN, MISSING, BAD_VALUE])))
def test_an_unknown_field_wins_whatever_the_order(order):
    assert _reported(list(order)) == "txt"


@pytest.mark.parametrize("order", list(itertools.permutations([MISSING, BAD_VALUE])))
def test_a_missing_field_wins_over_a_bad_value(order):
    assert _reported(list(order)) == "text"


def test_within_one_kind_the_first_in_field_order_is_reported():
    assert _reported([BAD_VALUE, BAD_NESTED]) == "max_tokens"
    assert _reported([BAD_NESTED, BAD_VALUE]) == "messages[0].role"


def test_the_message_names_the_field():
    error = from_validation_error(ValidationError.from_exception_data("Body", [MISSING, UNKNOWN]))
    assert error.status == 400 and "'txt'" in error.message and error.code == "invalid_value"
