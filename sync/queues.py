"""Storage queues the app writes to directly (output bindings cannot delay a message), and the
poison queues' replay.

A work item throttled by anny or Graph is put back with a visibility delay of the
`Retry-After` it got: a new message, so the wait never counts towards `maxDequeueCount`
and the poison queue. Messages are base64, as host.json's `messageEncoding` says.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from azure.core.exceptions import ResourceExistsError
from azure.core.pipeline.transport import AioHttpTransport
from azure.storage.queue import BinaryBase64DecodePolicy, BinaryBase64EncodePolicy
from azure.storage.queue.aio import QueueClient

from sync.settings import StorageSettings, environment_proxy
from sync.work import BACKFILL_POISON_QUEUE, BACKFILL_QUEUE, POISON_QUEUE, WORK_QUEUE, Work, encode

log = logging.getLogger(__name__)
MAX_VISIBILITY_S = 7 * 24 * 3600  # Azure Queue Storage's limit
REPLAY_LIMIT = 1000  # poison items moved back per `replay-poison` (the command says how many are left)
REPLAY_LEASE_S = 60  # a poison item being moved is invisible this long (another replay does not take it too)


def queue_client(storage: StorageSettings, name: str) -> tuple[QueueClient, Any]:
    """A client for one queue of the app's storage, and the credential to close with it (or None)."""
    encode, decode = BinaryBase64EncodePolicy(), BinaryBase64DecodePolicy()
    # Proxy variables read only when a proxy is configured (no per-request lookups in the thread pool).
    transport = AioHttpTransport(use_env_settings=environment_proxy())
    if storage.connection_string:
        return QueueClient.from_connection_string(storage.connection_string, name, message_encode_policy=encode,
                                                  message_decode_policy=decode, transport=transport), None
    from azure.identity.aio import DefaultAzureCredential

    credential = DefaultAzureCredential(managed_identity_client_id=storage.client_id or None)
    return QueueClient(storage.queue_service_uri, name, credential=credential, message_encode_policy=encode,
                       message_decode_policy=decode, transport=transport), credential


class WorkQueues:
    """Sends work items to the app's queues, optionally invisible for a while. One per event loop."""

    def __init__(self, storage: StorageSettings) -> None:
        self._storage = storage
        self._clients: dict[str, tuple[QueueClient, Any]] = {}
        self._creating = asyncio.Lock()  # rooms synced side by side must not each open a client

    async def send(self, work: Work, delay_s: float = 0, queue: str = WORK_QUEUE, outages: int = 0) -> None:
        client = await self._client(queue)
        visibility = min(max(0, round(delay_s)), MAX_VISIBILITY_S)
        await client.send_message(encode(work, outages).encode(), visibility_timeout=visibility or None)

    async def replay_poison(self, limit: int = REPLAY_LIMIT) -> dict[str, int]:
        """Move the items the poison queues keep back to their queues (`replay-poison`, once the
        cause is fixed), at most `limit` per call: each is sent anew (as it was written) before it
        is deleted from the poison queue, so a crash in between replays it twice, never loses it
        (every work item is idempotent). Returns how many went back to each queue."""
        moved: dict[str, int] = {WORK_QUEUE: 0, BACKFILL_QUEUE: 0}
        for poison, target in ((POISON_QUEUE, WORK_QUEUE), (BACKFILL_POISON_QUEUE, BACKFILL_QUEUE)):
            left = limit - sum(moved.values())
            if left <= 0:
                break  # not even received: a received item stays invisible for REPLAY_LEASE_S
            source, destination = await self._client(poison), await self._client(target)
            page = min(32, left)
            async for message in source.receive_messages(messages_per_page=page, visibility_timeout=REPLAY_LEASE_S,
                                                         max_messages=left):
                await destination.send_message(message.content)
                await source.delete_message(message)
                moved[target] += 1
        log.info("poison queue replayed", extra={"moved": moved})
        return moved

    async def _client(self, name: str) -> QueueClient:
        if name not in self._clients:
            async with self._creating:
                if name not in self._clients:
                    client, credential = queue_client(self._storage, name)
                    try:
                        await client.create_queue()
                    except ResourceExistsError:
                        pass
                    self._clients[name] = (client, credential)
        return self._clients[name][0]

    async def close(self) -> None:
        for client, credential in self._clients.values():
            await client.close()
            if credential is not None:
                await credential.close()
        self._clients.clear()
