"""Hostile frames over a real socket: each gets a protocol error and the session answers afterwards."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from relay_fakes import FakeUpstream, fake_upstream
from relay_harness import recv_until, relay_settings, running_relay, token


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with fake_upstream() as fake:
        yield fake


async def test_nested_surrogate_and_duplicate_key_frames_leave_the_session_working(
    upstream: FakeUpstream,
) -> None:
    async with running_relay(relay_settings(upstream.url)) as r:
        ws = await r.connect(token("mallory"))
        await recv_until(ws, "session.created")
        for frame in (
            "[" * 10_000 + "]" * 10_000,
            '{"type":"nope","event_id":"\\ud800"}',
            '{"type":"session.update","type":"input_audio_buffer.clear"}',
        ):
            await ws.send(frame)
            err, _ = await recv_until(ws, "error")
            assert err["error"]["code"] == "invalid_json"
        item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hours?"}]}
        await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
        await ws.send(json.dumps({"type": "response.create"}))
        done, _ = await recv_until(ws, "response.done")
        assert done["response"]["status"] == "completed"
        await ws.close()
    assert "session.update" not in upstream.types()[1:]  # the relay's own, first; never the client's
