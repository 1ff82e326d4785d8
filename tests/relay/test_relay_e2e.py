"""End to end: the stock openai SDK, with a JWT as its key, through the relay to the REAL local voice server
(faster-whisper, llama.cpp + SmolLM2, Piper). Also the ``openai`` provider's code path, pointed at that server."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
from openai import AsyncOpenAI
from relay_harness import events_until_done, relay_settings, running_relay, token

from parley.relay.context import Context, Passage

pytestmark = pytest.mark.models


class _Library:
    async def retrieve(self, query: str, *, session_id: str, kb: str) -> Context:
        return Context([Passage("The library opens at nine in the morning.", "library.md", 0.8)])

    async def ready(self) -> bool:
        return True


async def test_sdk_spoken_turn_through_the_relay_to_the_local_voice_server(local_voice_url: str) -> None:
    from parley.bench.speech import speak

    pcm = speak("What time does the library open?", lead_silence_ms=300, tail_silence_ms=1200)
    async with running_relay(relay_settings(local_voice_url), context=_Library()) as relay:
        client = AsyncOpenAI(base_url=f"{relay.http}/v1", api_key=token("e2e-speaker"))
        events_query = {
            "parley_events": "true"
        }  # parley.context and parley.turn come only to clients that ask
        async with client.realtime.connect(model="parley-local", extra_query=events_query) as conn:
            chunk = 4800  # 100 ms
            for i in range(0, len(pcm), chunk):
                await conn.input_audio_buffer.append(audio=base64.b64encode(pcm[i : i + chunk]).decode())
                await asyncio.sleep(0.02)  # faster than real time, within the inbound audio burst
            events = await events_until_done(conn, within_s=120)
            turn = json.loads(await asyncio.wait_for(conn.recv_bytes(), 10))
    types = [e["type"] for e in events]
    assert "input_audio_buffer.speech_started" in types
    transcript = next(
        e for e in events if e["type"] == "conversation.item.input_audio_transcription.completed"
    )
    assert "library" in transcript["transcript"].lower()
    context = next(e for e in events if e["type"] == "parley.context")
    assert [s["source"] for s in context["sources"]] == ["library.md"]
    assert "response.output_audio.delta" in types
    assert turn["type"] == "parley.turn"
    timings = turn["timings_ms"]
    assert all(timings[k] is not None for k in ("transcript", "retrieval", "response_created", "first_audio"))
    assert (
        timings["transcript"] <= timings["retrieval"] <= timings["response_created"] <= timings["first_audio"]
    )


async def test_openai_provider_path_against_a_local_voice_server(local_voice_url: str) -> None:
    # PARLEY_OPENAI_REALTIME_URL pointed at a local voice server: the relay's openai code path, for real
    async with running_relay(relay_settings(local_voice_url)) as relay:
        client = AsyncOpenAI(base_url=f"{relay.http}/v1", api_key=token("e2e-typist"))
        async with client.realtime.connect(
            model="gpt-realtime", extra_query={"parley_events": "true"}
        ) as conn:
            assert json.loads(await conn.recv_bytes())["type"] == "session.created"  # always the first frame
            info = json.loads(await conn.recv_bytes())
            assert info["type"] == "parley.session" and info["provider"] == "openai"
            item = {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "Say hello."}],
            }
            await conn.conversation.item.create(item=item)  # type: ignore[arg-type]
            await conn.response.create()
            events = await events_until_done(conn, within_s=120)
    types = [e["type"] for e in events]
    assert types.count("response.created") == 1
    assert "response.output_audio.delta" in types
    assert events[-1]["response"]["status"] == "completed"
