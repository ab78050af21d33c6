"""The local functions runner drives HTTP, queue and timer triggers as the Functions host does."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from azure.core.exceptions import ResourceExistsError
from azure.storage.queue.aio import QueueClient

from devhost.azurite import Azurite
from devhost.host import HostKeys, LocalFunctionsHost, PollingBackoff, QueueOptions
from tests.apps import trivial_app

QUEUE = "trivial-work"


@pytest.fixture
def host(azurite: Azurite) -> Iterator[LocalFunctionsHost]:
    for bucket in trivial_app.seen.values():
        bucket.clear()
    runner = LocalFunctionsHost(
        trivial_app.app, azurite.connection_string, keys=HostKeys(master="m-key", default="f-key"),
        queues=QueueOptions(max_dequeue_count=3, visibility_timeout=0, batch_size=4),
        env={"TRIVIAL_QUEUE": QUEUE}, poll_queues=False).start()
    runner.call(_clear_queues(runner))
    yield runner
    runner.stop()


async def _queue_holding(azurite: Azurite, queue: str, *names: str) -> None:
    """The queue, created or emptied, then holding a message per name (base64, as the host writes them)."""
    async with QueueClient.from_connection_string(azurite.connection_string, queue) as raw:
        try:
            await raw.create_queue()
        except ResourceExistsError:
            await raw.clear_messages()
        for name in names:
            await raw.send_message(base64.b64encode(json.dumps({"name": name}).encode()).decode())


async def _clear_queues(runner: LocalFunctionsHost) -> None:
    for name in (QUEUE, f"{QUEUE}-poison"):
        await (await runner.ensure_queue(name)).clear_messages()


async def test_http_trigger_with_function_key_enqueues_outputs(host: LocalFunctionsHost) -> None:
    async with httpx.AsyncClient(base_url=host.url) as client:
        answer = await client.post("/api/echo/ada?code=f-key", content=b"payload")
    assert answer.status_code == 202 and answer.text == "hello ada"
    assert answer.headers["content-type"].startswith("text/plain")
    messages = [json.loads(m) for m in await host.run(host.queue_messages(QUEUE))]
    assert messages == [{"name": "ada", "body": "payload"}, {"name": "ada-2"}]


async def test_http_auth_levels_are_honoured(host: LocalFunctionsHost) -> None:
    async with httpx.AsyncClient(base_url=host.url) as client:
        assert (await client.post("/api/echo/x")).status_code == 401
        assert (await client.post("/api/echo/x?code=wrong")).status_code == 401
        assert (await client.post("/api/echo/x", headers={"x-functions-key": "f-key"})).status_code == 202
        assert (await client.post("/api/echo/x?code=m-key")).status_code == 202
        assert (await client.get("/api/secret?code=f-key")).status_code == 401
        assert (await client.get("/api/secret?code=m-key")).text == "admin only"
        assert (await client.get("/api/open", params={"a": "1"})).json() == {"a": "1"}
        assert (await client.get("/api/echo/x?code=f-key")).status_code == 404  # no route takes GET
        assert (await client.get("/api/nothing-here")).status_code == 404
    assert await host.run(host.queue_messages(QUEUE)) != []


async def test_a_body_sent_in_chunks_does_not_reach_the_function(host: LocalFunctionsHost) -> None:
    """The host hands an out-of-process worker a body only when the request says its length."""
    async def chunks() -> AsyncIterator[bytes]:
        yield b"pay"
        yield b"load"

    async with httpx.AsyncClient(base_url=host.url) as client:
        assert (await client.post("/api/echo/chunked?code=f-key", content=chunks())).status_code == 202
    messages = [json.loads(m) for m in await host.run(host.queue_messages(QUEUE))]
    assert {"name": "chunked", "body": ""} in messages


async def test_http_routing_and_keys_as_the_host_has_them(host: LocalFunctionsHost) -> None:
    """ASP.NET routing ignores case and a trailing slash; the `x-functions-key` header wins over
    `?code=`, even when empty; every query parameter reaches the function, `code` too."""
    async with httpx.AsyncClient(base_url=host.url) as client:
        assert (await client.post("/api/ECHO/x/?code=f-key")).status_code == 202
        assert (await client.post("/api/echo/x?code=wrong", headers={"x-functions-key": "f-key"})).status_code == 202
        assert (await client.post("/api/echo/x?code=f-key", headers={"x-functions-key": ""})).status_code == 401
        assert (await client.get("/api/open", params={"a": "1", "code": "k"})).json() == {"a": "1", "code": "k"}


def test_host_keys_compare_whole_keys_of_any_text() -> None:
    keys = HostKeys(master="m-key", default="f-key", per_function={"echo": "e-key"})
    assert keys.allows("function", "echo", "e-key") and keys.allows("function", "other", "f-key")
    assert not keys.allows("function", "other", "e-key")
    assert not keys.allows("function", "echo", "f-kez") and not keys.allows("admin", "echo", "f-key")
    assert not keys.allows("function", "echo", "ключ") and not keys.allows("function", "echo", "\ud800")
    assert not keys.allows("function", "echo", None) and keys.allows("anonymous", "echo", None)


async def test_non_ascii_key_is_401_not_500(host: LocalFunctionsHost) -> None:
    async with httpx.AsyncClient(base_url=host.url) as client:
        assert (await client.post("/api/echo/x", params={"code": "ключ"})).status_code == 401


async def test_queue_messages_are_base64_and_processed(host: LocalFunctionsHost, azurite: Azurite) -> None:
    async with QueueClient.from_connection_string(azurite.connection_string, QUEUE) as raw:
        await raw.send_message(base64.b64encode(json.dumps({"name": "grace"}).encode()).decode())
    await host.run(host.drain())
    assert trivial_app.seen["queue"] == ["grace"]
    assert trivial_app.seen["attempts"] == [("grace", 1)]


async def test_failing_message_lands_in_poison_after_max_dequeue_count(host: LocalFunctionsHost) -> None:
    async with httpx.AsyncClient(base_url=host.url) as client:
        await client.post("/api/echo/fail-me?code=f-key")
    await host.run(host.drain())
    attempts = [count for name, count in trivial_app.seen["attempts"] if name == "fail-me"]
    assert attempts == [1, 2, 3]
    assert trivial_app.seen["queue"] == ["fail-me-2"]
    poison = [json.loads(m) for m in await host.run(host.queue_messages(f"{QUEUE}-poison"))]
    assert poison == [{"name": "fail-me", "body": ""}]
    assert host.failures["consume"] == 3


async def test_timer_fires_on_demand_and_on_schedule(azurite: Azurite) -> None:
    trivial_app.seen["timer"].clear()
    runner = LocalFunctionsHost(trivial_app.app, azurite.connection_string, env={"TRIVIAL_QUEUE": QUEUE},
                                poll_queues=False, run_timers=True).start()
    try:
        await runner.run(runner.fire_timer("tick", past_due=True))
        assert trivial_app.seen["timer"][0] is True
        for _ in range(50):
            if len(trivial_app.seen["timer"]) >= 2:
                break
            await asyncio.sleep(0.1)
        assert trivial_app.seen["timer"][1:2] == [False]
    finally:
        runner.stop()


async def test_a_function_disabled_by_its_app_setting_does_not_run_here(azurite: Azurite) -> None:
    """`AzureWebJobs.<name>.Disabled`, as Azure reads it: the HTTP trigger answers 404 and the
    queue's messages stay for an instance where the function runs."""
    trivial_app.seen["queue"].clear()
    env = {"TRIVIAL_QUEUE": QUEUE, "AzureWebJobs.echo.Disabled": "true", "AzureWebJobs_consume_Disabled": "1"}
    runner = LocalFunctionsHost(trivial_app.app, azurite.connection_string,
                                keys=HostKeys(master="m-key", default="f-key"), env=env, poll_queues=True).start()
    try:
        await runner.run(_clear_queues(runner))
        async with httpx.AsyncClient(base_url=runner.url) as client:
            assert (await client.post("/api/echo/ada?code=f-key")).status_code == 404
            assert (await client.post("/api/echo/ada")).status_code == 401  # the key is checked first
            assert (await client.get("/api/open")).status_code == 200  # the others still run
            assert (await client.post("/api/echo/ada?code=m-key")).status_code == 202  # the master key runs it
        await runner.run(_clear_queues(runner))
        async with QueueClient.from_connection_string(azurite.connection_string, QUEUE) as raw:
            await raw.send_message(base64.b64encode(json.dumps({"name": "grace"}).encode()).decode())
        await runner.run(runner.drain())
        await asyncio.sleep(0.5)  # the listener would have taken it by now
        assert trivial_app.seen["queue"] == []
        assert len(await runner.run(runner.queue_messages(QUEUE))) == 1
    finally:
        runner.stop()


async def test_a_message_whose_attempts_were_lost_goes_to_the_poison_queue_unrun(azurite: Azurite) -> None:
    """Dequeued more than `maxDequeueCount` times without failing (its instances stopped while
    running it): the host moves it to the poison queue without running it again."""
    trivial_app.seen["attempts"].clear()
    queue = "trivial-lost"
    await _queue_holding(azurite, f"{queue}-poison")
    await _queue_holding(azurite, queue, "lost")
    async with QueueClient.from_connection_string(azurite.connection_string, queue) as raw:
        for _ in range(3):  # three attempts whose instance stopped before it finished
            assert [m async for m in raw.receive_messages(visibility_timeout=1)]
            await asyncio.sleep(1.1)
    runner = LocalFunctionsHost(trivial_app.app, azurite.connection_string, env={"TRIVIAL_QUEUE": queue},
                                queues=QueueOptions(max_dequeue_count=2, visibility_timeout=0),
                                poll_queues=False).start()
    try:
        await runner.run(runner.drain())
        assert trivial_app.seen["attempts"] == []
        assert [json.loads(m) for m in await runner.run(runner.queue_messages(f"{queue}-poison"))] == [{"name": "lost"}]
    finally:
        runner.stop()


def test_queue_options_come_from_host_json() -> None:
    options = QueueOptions.from_host_json()
    assert options.max_dequeue_count == 5 and options.max_polling_interval == 2.0
    assert options.batch_size == 16 and options.refill_at == 8 and not options.shared_instance
    assert QueueOptions(batch_size=16).refill_at == 8  # the host's default: half a batch


def test_an_idle_listener_backs_off_as_the_webjobs_sdk_does() -> None:
    backoff = PollingBackoff(maximum=2.0)
    empty_polls = [backoff.next_delay(False) for _ in range(8)]
    assert empty_polls[0] == 0.1 and empty_polls[-1] == 2.0
    assert all(a < b or b == 2.0 for a, b in itertools.pairwise(empty_polls))
    assert 0.18 <= empty_polls[1] <= 0.22 and 0.26 <= empty_polls[2] <= 0.34  # 100 ms + 100 ms·2^(n-1) ± 20 %
    assert backoff.next_delay(True) == 0.1  # a poll that found messages starts over


async def test_next_batch_is_fetched_once_no_more_than_new_batch_threshold_run(azurite: Azurite) -> None:
    trivial_app.seen["queue"].clear()
    trivial_app.seen["attempts"].clear()
    queue = "trivial-refill"
    # all waiting before the listener starts: its first batch is a full one
    await _queue_holding(azurite, queue, *(f"hold-{i}" for i in range(8)))
    runner = LocalFunctionsHost(
        trivial_app.app, azurite.connection_string, env={"TRIVIAL_QUEUE": queue},
        queues=QueueOptions(visibility_timeout=0, batch_size=4, new_batch_threshold=2,
                            max_polling_interval=0.2)).start()
    started = trivial_app.seen["attempts"]

    async def release(*names: str) -> None:
        for name in names:
            trivial_app.gates.setdefault(name, asyncio.Event()).set()

    async def until(count: int) -> None:
        for _ in range(200):
            if len(started) >= count:
                return
            await asyncio.sleep(0.05)

    try:
        await until(4)
        await asyncio.sleep(1)  # time for wrongly fetching more while four are still running
        assert len(started) == 4
        await runner.run(release(*(name for name, _ in started[:2])))
        await until(8)
        assert len(started) == 8  # two still running from the first batch, four from the second
        await runner.run(release(*(f"hold-{i}" for i in range(8))))
        await runner.run(runner.drain())
        assert sorted(trivial_app.seen["queue"]) == sorted(f"hold-{i}" for i in range(8))
    finally:
        runner.stop()
        trivial_app.gates.clear()


async def test_a_message_stays_invisible_while_its_function_outlasts_the_lease(azurite: Azurite) -> None:
    """The host renews a running message's invisibility at half its lease: a slow work item is
    never handed to a second invocation while the first still runs, and is deleted once done."""
    trivial_app.seen["queue"].clear()
    trivial_app.seen["attempts"].clear()
    queue = "trivial-lease"
    await _queue_holding(azurite, queue, "hold-long")
    runner = LocalFunctionsHost(
        trivial_app.app, azurite.connection_string, env={"TRIVIAL_QUEUE": queue},
        queues=QueueOptions(visibility_timeout=0, max_polling_interval=0.2, message_lease_s=2)).start()
    try:
        for _ in range(100):
            if trivial_app.seen["attempts"]:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(3.5)  # beyond the lease: an unrenewed message would be visible and fetched again
        assert trivial_app.seen["attempts"] == [("hold-long", 1)]
        await runner.run(_open_gate("hold-long"))
        await runner.run(runner.drain())
        assert trivial_app.seen["queue"] == ["hold-long"]
        await asyncio.sleep(2.5)  # deleted with the renewed pop receipt: nothing comes back after the lease
        assert trivial_app.seen["attempts"] == [("hold-long", 1)]
        assert await runner.run(runner.queue_messages(queue)) == []
    finally:
        runner.stop()
        trivial_app.gates.clear()


async def _open_gate(name: str) -> None:
    trivial_app.gates.setdefault(name, asyncio.Event()).set()


def test_unset_binding_expression_is_reported(azurite: Azurite) -> None:
    runner = LocalFunctionsHost(trivial_app.app, azurite.connection_string, env={}, poll_queues=False)
    with pytest.raises(KeyError, match="TRIVIAL_QUEUE"):
        runner.start()
    runner.server.stop()
