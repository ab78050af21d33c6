"""Request bodies: how deep JSON may nest is the app's rule, the same on every Python the app runs on."""

from __future__ import annotations

import pytest

from sync.errors import InputError
from sync.validation import MAX_JSON_DEPTH, json_body


def nested(levels: int) -> bytes:
    return b'{"a":[' * (levels // 2) + b"1" + b"]}" * (levels // 2)


def test_json_as_deep_as_the_limit_is_accepted() -> None:
    document = json_body(nested(MAX_JSON_DEPTH))
    assert document["a"][0]["a"][0]["a"]


@pytest.mark.parametrize("levels", [MAX_JSON_DEPTH + 2, 900, 5000, 200_000])
def test_json_deeper_than_the_limit_is_refused_whatever_the_parser_manages(levels: int) -> None:
    # 900 levels parse on every Python; 5,000 parse on 3.13 but not on 3.11; 200,000 on none
    with pytest.raises(InputError) as refused:
        json_body(nested(levels))
    assert refused.value.field == "body" and "nested too deeply" in refused.value.problem
