"""Table keys: any Graph event id or e-mail address round-trips and is a legal key."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync.errors import StateError
from sync.keys import decode_key, encode_key, transaction_id

FORBIDDEN = set("/\\#?") | {chr(c) for c in range(0x20)} | {chr(c) for c in range(0x7F, 0xA0)}
GRAPH_ID = ("AAMkAGI2TG93AAA=/+AAAAAENAACn7ByH+r/2Tq2xLVbQ2AAB1cUZJAAA=/"
            "AAMkADQ5MTljNzg3LTA3MDgtNDg3Mi04YzQzLTA3NjVmMGE2ZTZkNABGAAAAAAA")


@given(st.text(max_size=200))
def test_any_text_round_trips_as_a_legal_key(value: str) -> None:
    key = encode_key(value)
    assert decode_key(key) == value
    assert not FORBIDDEN & set(key)


@given(st.emails())
def test_email_addresses_round_trip(address: str) -> None:
    assert decode_key(encode_key(address)) == address


def test_graph_event_id_round_trips() -> None:
    key = encode_key(GRAPH_ID)
    assert "/" not in key and "+" not in key and "=" not in key
    assert decode_key(key) == GRAPH_ID


def test_overlong_key_is_refused_with_a_clear_error() -> None:
    with pytest.raises(StateError, match="key too long"):
        encode_key("/" * 400)


def test_transaction_id_is_deterministic_per_booking_and_generation() -> None:
    assert transaction_id("b-1", 0) == transaction_id("b-1", 0)
    assert transaction_id("b-1", 0) != transaction_id("b-1", 1)
    assert transaction_id("b-1", 0) != transaction_id("b-2", 0)
    assert transaction_id("b-1", 0, "t1") == transaction_id("b-1", 0, "t1")
    assert transaction_id("b-1", 0, "t1") != transaction_id("b-1", 0, "t2")
