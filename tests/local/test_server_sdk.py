"""The local voice server on a loopback port, driven by the stock ``openai`` SDK.

Model tests (``-m models``) use the real packaged engines and a real llama.cpp server. The auth/health tests at the
top run with fake engines.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from loopback import uvicorn_on_loopback
from openai import AsyncOpenAI
from session_fakes import fake_engines

from parley.local.engines import Engines
from parley.local.server import uvicorn_config
from parley.realtime.audio import BYTES_PER_MS
from parley.settings import Settings

logger = logging.getLogger(__name__)
CHUNK_MS = 40


@contextlib.asynccontextmanager
async def serving(settings: Settings, engines: Engines) -> AsyncIterator[int]:
    config = uvicorn_config(settings, engines, "127.0.0.1", 0)
    config.lifespan = "off"  # engines are shared between tests: do not close them here
    async with uvicorn_on_loopback(config) as port:
        yield port


class Client:
    """A stock SDK connection with an event log, ``expect`` and real-time audio streaming."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.seen: list[Any] = []
        self.marks: dict[str, float] = {}

    async def expect(self, kind: str, wait_s: float = 60.0) -> Any:
        async with asyncio.timeout(wait_s):
            while True:
                event = await self.conn.recv()
                self.seen.append(event)
                self.marks.setdefault(event.type, time.monotonic())
                if event.type == kind:
                    return event

    def of(self, kind: str) -> list[Any]:
        return [e for e in self.seen if e.type == kind]

    async def stream(self, pcm: bytes, *, real_time: bool = True) -> None:
        step = CHUNK_MS * BYTES_PER_MS
        start = time.monotonic()
        for n, off in enumerate(range(0, len(pcm), step)):
            audio = base64.b64encode(pcm[off : off + step]).decode()
            await self.conn.input_audio_buffer.append(audio=audio)
            if real_time:
                delay = start + (n + 1) * CHUNK_MS / 1000 - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)


@contextlib.asynccontextmanager
async def connect(port: int, api_key: str = "x") -> AsyncIterator[Client]:
    client = AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=api_key)
    async with client.realtime.connect(model="parley-local") as conn:
        c = Client(conn)
        await c.expect("session.created", 10)
        yield c


# --- without models -------------------------------------------------------------------------------------------


async def test_healthz_and_api_key() -> None:
    settings = Settings(local_api_key="sekret", stt_partial_interval_ms=0)
    async with serving(settings, fake_engines()) as port:
        async with httpx.AsyncClient() as http:
            health = (await http.get(f"http://127.0.0.1:{port}/healthz")).json()
        assert health["status"] == "ok" and "stt" in health["models"]
        with pytest.raises(Exception, match="401"):
            async with connect(port, api_key="wrong"):
                pass
        async with connect(port, api_key="sekret") as c:
            await c.conn.session.update(session={"type": "realtime", "instructions": "hi"})
            assert (await c.expect("session.updated")).session.instructions == "hi"


# --- with the real models -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
async def real_engines(
    model_settings: Settings, llama_server: Any, stt_engine: Any, tts_engine: Any, vad_factory: Any
) -> Engines:
    from parley.local.llm import OpenAIChatLLM

    settings = model_settings.model_copy(update={"llm_base_url": llama_server.base_url})
    await stt_engine.warmup()
    await tts_engine.warmup()
    return Engines(stt=stt_engine, tts=tts_engine, llm=OpenAIChatLLM(settings), vad=vad_factory)


@pytest.fixture(scope="session")
async def real_port(model_settings: Settings, llama_server: Any, real_engines: Engines) -> AsyncIterator[int]:
    settings = model_settings.model_copy(update={"llm_base_url": llama_server.base_url})
    async with serving(settings, real_engines) as port:
        yield port


def _words(text: str) -> set[str]:
    return {w.strip(".,?!").lower() for w in text.split()}


@pytest.mark.models
async def test_spoken_turn(real_port: int) -> None:
    from parley.bench.speech import speak

    pcm = speak("What is the capital of France?", lead_silence_ms=300, tail_silence_ms=1200)
    async with connect(real_port) as c, asyncio.TaskGroup() as tg:
        await c.conn.session.update(
            session={"type": "realtime", "instructions": "Answer in one short sentence."}
        )
        tg.create_task(c.stream(pcm))
        started = await c.expect("input_audio_buffer.speech_started")
        stopped = await c.expect("input_audio_buffer.speech_stopped")
        assert started.item_id == stopped.item_id and stopped.audio_end_ms > started.audio_start_ms
        transcript = (await c.expect("conversation.item.input_audio_transcription.completed")).transcript
        assert {"capital", "france"} <= _words(transcript), transcript
        done = await c.expect("response.done")
        assert done.response.status == "completed"
        assert c.of("response.output_audio.delta")
        spoken = c.of("response.output_audio_transcript.done")[0].transcript
        assert spoken and spoken == "".join(e.delta for e in c.of("response.output_audio_transcript.delta"))
        first_audio = c.marks["response.output_audio.delta"] - c.marks["input_audio_buffer.speech_stopped"]
        logger.info("speech_stopped -> first audio delta: %.0f ms", first_audio * 1000)


@pytest.mark.models
async def test_barge_in_then_truncate_and_retrieve(real_port: int) -> None:
    from parley.bench.speech import speak

    question = speak("Tell me a long story about a dragon.", lead_silence_ms=200, tail_silence_ms=900)
    interruption = speak("Wait, stop.", lead_silence_ms=0, tail_silence_ms=900)
    async with connect(real_port) as c, asyncio.TaskGroup() as tg:
        await c.conn.session.update(
            session={
                "type": "realtime",
                "max_output_tokens": 400,
                "instructions": "You tell long stories of at least fifteen sentences.",
            }
        )
        tg.create_task(c.stream(question))
        first = await c.expect("response.output_audio.delta")
        tg.create_task(c.stream(interruption))
        await c.expect("input_audio_buffer.speech_started")
        done = await c.expect("response.done")
        assert done.response.id == first.response_id
        assert done.response.status == "cancelled", "the answer ended before the user spoke again"
        assert done.response.status_details.reason == "turn_detected"

        item_id = first.item_id
        audio_ms = (
            sum(
                len(base64.b64decode(e.delta))
                for e in c.of("response.output_audio.delta")
                if e.item_id == item_id
            )
            // BYTES_PER_MS
        )
        full = next(
            e.transcript for e in c.of("response.output_audio_transcript.done") if e.item_id == item_id
        )
        await c.conn.conversation.item.truncate(
            item_id=item_id, content_index=0, audio_end_ms=audio_ms + 5000
        )
        assert (await c.expect("error")).error.param == "audio_end_ms"
        cut = audio_ms // 3
        await c.conn.conversation.item.truncate(item_id=item_id, content_index=0, audio_end_ms=cut)
        assert (await c.expect("conversation.item.truncated")).audio_end_ms == cut
        await c.conn.conversation.item.retrieve(item_id=item_id)
        kept = (await c.expect("conversation.item.retrieved")).item.content[0].transcript
        assert len(kept.split()) < len(full.split()), (kept, full)
        assert " ".join(full.split()).startswith(kept)

        # "Wait, stop." is a turn of its own: its answer starts; the client cancels it (and keeps reading, so
        # the close handshake is not stuck behind unread audio).
        second = await c.expect("response.created")
        await c.conn.response.cancel()
        done = await c.expect("response.done")
        assert done.response.id == second.response.id and done.response.status in ("cancelled", "completed")


@pytest.mark.models
async def test_manual_commit_mode(real_port: int) -> None:
    from parley.bench.speech import speak

    pcm = speak("What is the capital of France?", lead_silence_ms=100, tail_silence_ms=100)
    async with connect(real_port) as c:
        await c.conn.session.update(
            session={"type": "realtime", "audio": {"input": {"turn_detection": None}}}
        )
        assert (await c.expect("session.updated")).session.audio.input.turn_detection is None
        await c.stream(pcm, real_time=False)
        await c.conn.input_audio_buffer.commit()
        await c.conn.response.create()
        transcript = (await c.expect("conversation.item.input_audio_transcription.completed")).transcript
        assert "france" in _words(transcript)
        done = await c.expect("response.done")
        assert done.response.status == "completed" and c.of("response.output_audio.delta")
        assert not c.of("input_audio_buffer.speech_started")


@pytest.mark.models
async def test_text_only_mode(real_port: int) -> None:
    async with connect(real_port) as c:
        await c.conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        await c.conn.conversation.item.create(
            item={
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "Say hello."}],
            }
        )
        await c.conn.response.create()
        done = await c.expect("response.done")
        assert done.response.status in ("completed", "incomplete")
        text = c.of("response.output_text.done")[0].text
        assert text and text == "".join(e.delta for e in c.of("response.output_text.delta"))
        assert not [e for e in c.seen if "audio" in e.type]


@pytest.mark.models
async def test_malformed_events_get_errors(real_port: int) -> None:
    async with connect(real_port) as c:
        await c.conn.send_raw("{not json")
        assert (await c.expect("error")).error.code == "invalid_json"
        await c.conn.send_raw('{"type": "nope.nope", "event_id": "e1"}')
        err = (await c.expect("error")).error
        assert (err.code, err.event_id) == ("unknown_event", "e1")
        await c.conn.send_raw(
            '{"type": "session.update", "session": {"type": "realtime", "max_output_tokens": -1}}'
        )
        assert (await c.expect("error")).error.code == "invalid_value"
        await c.conn.input_audio_buffer.commit()
        assert (await c.expect("error")).error.code == "input_audio_buffer_commit_empty"
        await c.conn.response.cancel()
        assert (await c.expect("error")).error.code == "response_cancel_not_active"
        await c.conn.session.update(session={"type": "realtime", "instructions": "alive"})
        assert (await c.expect("session.updated")).session.instructions == "alive"


@pytest.mark.models
async def test_llm_down_then_back(model_settings: Settings, llama_server: Any, real_engines: Engines) -> None:
    from parley.local.llm import OpenAIChatLLM

    dead = model_settings.model_copy(update={"llm_base_url": "http://127.0.0.1:9/v1"})
    engines = Engines(
        stt=real_engines.stt, tts=real_engines.tts, llm=OpenAIChatLLM(dead), vad=real_engines.vad
    )
    async with serving(dead, engines) as port, connect(port) as c:
        await c.conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        await c.conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hello?"}]}
        )
        await c.conn.response.create()
        err = (await c.expect("error")).error
        assert err.code == "llm_unavailable" and "unreachable" in err.message
        assert "127.0.0.1:9" not in err.message  # the internal address stays in the server log
        done = await c.expect("response.done")
        assert done.response.status == "failed"
        engines.llm = real_engines.llm  # the LLM server is back
        await c.conn.response.create()
        done = await c.expect("response.done")
        assert done.response.status in ("completed", "incomplete") and c.of("response.output_text.delta")
