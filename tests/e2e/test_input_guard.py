"""The standing guard (issue 12): a corpus of hostile requests and a Hypothesis fuzzer for every endpoint.

The invariant, checked after every request against the running app: never a 5xx; nothing on
the queue unless the request was valid (and then only well-formed work for what is mapped);
no secret in any response or log line. Run with `-s` to see the tally as one JSON line.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devhost.stack import GRAPH_TOKEN, WEBHOOK_SECRET, WEBHOOK_SECRET_HEADER
from sync.ingress import LIFECYCLE_EVENTS
from sync.validation import ANNY_EVENT_ID, ANNY_ID
from sync.work import BookingWork, LifecycleWork, RoomWork, decode
from tests.e2e.test_hardening import ROOM, Live, envelope, live, notification

__all__ = ["live"]  # the module-scoped running app, shared by every test here

HOSTILE: list[Any] = [
    "../resources", "1001#x", "1001?o=x", "../bookings/1001", "%2e%2e%2fresources", "..", ".", "/", "\\",
    True, False, None, "", " ", '"', "'", "10\r\n01", "a\x00b", "\ud800", "x\udfff", "7" * 5000, "🙂",
    "\u202e1001", "<script>", "${jndi:ldap://x}", 1.5, -1, 10**30, 1e308, [], {}, ["1001"], {"id": "1001"},
    "AAMk/+==", "bookings.created",
]
DEEP = b"[" * 5000 + b"]" * 5000
RAW_BODIES = [b"", b"null", b"[]", b"{}", b"1", b'"x"', b"{", b"\xff\xfe", b'{"a": NaN}', b'{"a": 1e999}',
              DEEP, b'{"value":' + DEEP + b"}", b'{"data":' + b'{"d":' * 3000 + b"1" + b"}" * 3001]


@dataclass
class Tally:
    tried: int = 0
    answered_2xx: int = 0
    answered_4xx: int = 0
    answered_5xx: int = 0
    wrongly_enqueued: int = 0
    secrets_leaked: int = 0


TALLY = Tally()
LOG_LINES: list[str] = []
_read = {"lines": 0}


class _Lines(logging.Handler):
    """Every log line the app writes, with its structured fields."""

    def emit(self, record: logging.LogRecord) -> None:
        LOG_LINES.append(record.getMessage() + " " + json.dumps(vars(record), default=str))


@pytest.fixture(scope="module")
def guard(live: Live) -> Iterator[Live]:
    lines = _Lines()
    root = logging.getLogger()
    root.addHandler(lines)
    previous = root.level
    root.setLevel(logging.INFO)
    try:
        yield live
    finally:
        root.removeHandler(lines)
        root.setLevel(previous)
        print("\ninput guard:", json.dumps(asdict(TALLY)))


def secrets_of(app: Live) -> list[str]:
    env = app.stack.env
    return [WEBHOOK_SECRET, app.stack.keys.default, app.stack.keys.master, app.subscription.client_state,
            env["ANNY_API_TOKEN"], GRAPH_TOKEN]


def well_formed(app: Live, message: bytes) -> bool:
    """Work the app may queue: ids in their sender's format, rooms and subscriptions that exist."""
    work = decode(message)
    if isinstance(work, BookingWork):
        return bool(ANNY_ID.fullmatch(work.booking_id)) and (
            not work.anny_event_id or bool(ANNY_EVENT_ID.fullmatch(work.anny_event_id)))
    if isinstance(work, RoomWork):
        return work.room == ROOM
    if isinstance(work, LifecycleWork):
        return work.subscription_id == app.subscription.subscription_id and work.event in LIFECYCLE_EVENTS
    return False


def check(app: Live, answer: httpx.Response) -> None:
    """The invariant, for one request; tallied for the closing report."""
    queued = app.queued()
    if queued:
        app.clear_queue()
    TALLY.tried += 1
    status = answer.status_code
    TALLY.answered_2xx += status < 300
    TALLY.answered_4xx += 400 <= status < 500
    TALLY.answered_5xx += status >= 500
    wrong = len(queued) if status >= 300 else sum(not well_formed(app, m) for m in queued)
    TALLY.wrongly_enqueued += wrong
    seen = answer.text + "".join(LOG_LINES[_read["lines"]:])
    _read["lines"] = len(LOG_LINES)
    leaked = [s for s in secrets_of(app) if s in seen]
    TALLY.secrets_leaked += bool(leaked)
    assert status < 500, answer.text
    assert wrong == 0, queued
    assert not leaked


def webhook(app: Live, body: bytes | Any, **headers: str | bytes | None) -> httpx.Response:
    sent = {WEBHOOK_SECRET_HEADER: WEBHOOK_SECRET, "x-anny-timestamp": str(int(time.time())), **headers}
    return app.post("anny/webhook", body, headers={k: v for k, v in sent.items() if v is not None})


def replaced(document: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of `document` with the dotted `path` set to `value` (numbers index lists)."""
    copy = json.loads(json.dumps(document))
    *parents, last = path.split(".")
    node: Any = copy
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    node[int(last) if isinstance(node, list) else last] = value
    return copy


# --- the corpus ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["event", "event_id", "data", "data.id", "triggered_at", "timestamp"])
def test_corpus_webhook_fields(guard: Live, field: str) -> None:
    for value in HOSTILE:
        body = replaced(envelope(), field, value)
        check(guard, webhook(guard, body, **({"x-anny-timestamp": None} if field == "triggered_at" else {})))
    wrapped = envelope()
    wrapped["data"] = {"data": {"id": "1001", "type": "bookings"}}
    for value in HOSTILE:
        check(guard, webhook(guard, replaced(wrapped, "data.data.id", value)))


def test_corpus_webhook_bodies_and_headers(guard: Live) -> None:
    for body in RAW_BODIES:
        check(guard, webhook(guard, body))
    now = datetime.now(UTC)
    stamps = ["", "abc", "-1", "0", "1e10", "99999999999999999999", "NaN", str(int(now.timestamp() * 1000)),
              (now - timedelta(days=2)).isoformat(), (now + timedelta(days=2)).isoformat(), "2026-13-45T00:00:00Z",
              now.isoformat(), now.strftime("%a, %d %b %Y %H:%M:%S GMT")]
    for stamp in stamps:
        check(guard, webhook(guard, envelope(), **{"x-anny-timestamp": stamp}))
    for secret in (None, "", "wrong", WEBHOOK_SECRET + "x", "ключ".encode()):
        check(guard, webhook(guard, envelope(), **{WEBHOOK_SECRET_HEADER: secret}))
    for event in ("bookings.created", "bookings.", "customers.created", "x" * 5000):
        check(guard, webhook(guard, envelope(), **{"x-anny-event": event}))


@pytest.mark.parametrize("route", ["graph/notify", "graph/lifecycle"])
def test_corpus_notifications(guard: Live, route: str) -> None:
    sub = guard.subscription
    good = {"value": [notification(sub, lifecycleEvent="reauthorizationRequired")]}
    for field in ("value", "value.0", "value.0.subscriptionId", "value.0.clientState", "value.0.resourceData",
                  "value.0.resourceData.id", "value.0.lifecycleEvent", "value.0.changeType"):
        for value in HOSTILE:
            check(guard, guard.post(route, replaced(good, field, value)))
    for body in RAW_BODIES:
        check(guard, guard.post(route, body))
    for token in ("", "x" * 5000, "<b>hi</b>", "a\r\nb", "🙂"):
        check(guard, guard.post(route, None, params={"validationToken": token}))
    check(guard, guard.post(route, good))


def test_corpus_admin_api(guard: Live) -> None:
    for value in HOSTILE:
        for body in ({"anny_resource": value, "room": ROOM}, {"anny_resource": guard.resource, "room": value},
                     {"anny_resource": "1001", "room": ROOM, "time_zone": value}):
            check(guard, guard.manage("POST", "rules", body))
        segment = quote(value if isinstance(value, str) else json.dumps(value), safe="/", errors="surrogatepass")
        check(guard, guard.manage("DELETE", f"rules/{segment}"))
        check(guard, guard.manage("POST", "rules", {"anny_resource": value}))
    for body in RAW_BODIES:
        check(guard, guard.manage("POST", "rules", body))
    for path in ("rules/a/b", "rules/..", "status/x", "../manage/status", "rules?x=1", "status?drift=%ED%A0%80"):
        check(guard, guard.manage("GET", path))
    assert [r.anny_resource_id for r in guard.store_call("list_rules")] == [guard.resource]


# --- the fuzzer ----------------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
HEADER_TEXT = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40).map(str.strip)
IDS = st.one_of(JSON, st.text(max_size=80), st.integers(), st.from_regex(ANNY_ID, fullmatch=True),
                st.sampled_from([h for h in HOSTILE if isinstance(h, str)]))
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(booking_id=IDS, event_id=IDS, event=st.one_of(st.sampled_from(["bookings.created", "bookings.deleted",
                                                                       "orders.created"]), JSON),
       stamp=st.one_of(st.none(), HEADER_TEXT, st.integers(min_value=-(10**12), max_value=10**13).map(str)),
       triggered_at=st.one_of(st.none(), JSON, st.datetimes(timezones=st.just(UTC)).map(datetime.isoformat)),
       wrapped=st.booleans(), extra=st.dictionaries(st.text(max_size=8), JSON, max_size=3))
def test_fuzz_anny_webhook(guard: Live, booking_id: Any, event_id: Any, event: Any, stamp: str | None,
                           triggered_at: Any, wrapped: bool, extra: dict[str, Any]) -> None:
    data = {**extra, "id": booking_id}
    body = {**envelope(), "event": event, "event_id": event_id, "data": {"data": data} if wrapped else data}
    if triggered_at is not None:
        body["triggered_at"] = triggered_at
    check(guard, webhook(guard, body, **({"x-anny-timestamp": stamp} if stamp is not None else {})))


def _fuzzed_item(app: Live) -> st.SearchStrategy[dict[str, Any]]:
    sub = app.subscription
    return st.fixed_dictionaries({
        "subscriptionId": st.one_of(st.just(sub.subscription_id), IDS),
        "clientState": st.one_of(st.just(sub.client_state), JSON),
        "lifecycleEvent": st.one_of(st.sampled_from(sorted(LIFECYCLE_EVENTS)), JSON),
        "resourceData": st.one_of(st.fixed_dictionaries({"id": IDS}), JSON),
        "changeType": JSON,
    }) | JSON


@pytest.mark.parametrize("route", ["graph/notify", "graph/lifecycle"])
def test_fuzz_graph_notifications(guard: Live, route: str) -> None:
    @FUZZ
    @given(items=st.lists(_fuzzed_item(guard), max_size=5), wrap=st.booleans(), token=st.none() | HEADER_TEXT)
    def fuzz(items: list[Any], wrap: bool, token: str | None) -> None:
        params = {"validationToken": token} if token is not None else None
        check(guard, guard.post(route, {"value": items} if wrap else items, params=params))

    fuzz()


@FUZZ
@given(method=st.sampled_from(["GET", "POST", "DELETE"]),
       path=st.one_of(st.sampled_from(["rules", "status", "rooms", "resources"]),
                      st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126,
                                                     exclude_characters="?#%./"), max_size=30).map(
                          lambda tail: f"rules/{tail}")),
       body=st.one_of(st.none(), st.fixed_dictionaries({"anny_resource": IDS, "room": st.one_of(
           st.just(ROOM), IDS)}), JSON))
def test_fuzz_admin_api(guard: Live, method: str, path: str, body: Any) -> None:
    if path.startswith("rules/") and method == "DELETE" and path[len("rules/"):] == guard.resource:
        return  # the one id that would really remove the module's rule
    check(guard, guard.manage(method, path, body))
