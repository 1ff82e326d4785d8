"""French and German spoken turns through the relay to the real local voice server (multilingual Whisper base,
SVOX Pico, llama.cpp with the packaged Qwen2.5-0.5B), with the stock ``openai`` SDK as the client.

- French: a real human recording, the Asterisk prompt ``vm-savefolder`` ("Dans quel dossier souhaitez-vous conserver
  ce message?", June Wallack, Canadian French, 16 kHz G.722), fetched by ``scripts/fetch-speech.sh``.
- German: no German human recording is reachable here, so espeak-ng's German voice speaks the question: a voice
  that is not the assistant's own (the assistant speaks German with Pico de-DE).

One session: the client sets French with ``session.update`` (through the relay's policy), asks, asks for Spanish
(refused by the server, naming the supported languages), then switches to German mid-session and asks again. Each turn must give a transcript in its language, an answer written in it
(``language_check.written_in``: its function words, few or none of the others'), and audio from its Pico voice, as
recorded by the real ``LanguageTTS`` that chose the voice of each phrase. (The audio's spectrum does not tell Pico
from Piper: measured here, the share of energy above 8.5 kHz is 5e-5 for Pico fr-FR and 8e-5 for Piper's joe.)
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from language_check import function_words, written_in
from openai import AsyncOpenAI
from relay_harness import local_voice_server, relay_settings, running_relay, token

from parley.local import espeak, pico
from parley.local.tts_router import LanguageTTS
from parley.realtime.audio import WIRE_RATE, float_to_pcm16, resample

pytestmark = pytest.mark.models
logger = logging.getLogger(__name__)

FRENCH_PROMPT = "vm-savefolder"
GERMAN_QUESTION = "Wo finde ich den nächsten Bahnhof?"


class RecordingTTS(LanguageTTS):
    """The real ``LanguageTTS``, remembering which voice spoke each phrase."""

    chosen: list[str] = []

    def choose(self, voice: str | None, language: str | None) -> Any:
        engine, name = super().choose(voice, language)
        self.chosen.append(name)
        return engine, name


@pytest.fixture(scope="module")
def language_tts(model_settings: Any, require_setup: Any) -> Iterator[RecordingTTS]:
    require_setup(pico.available(), "ttspico is not installed")
    tts = RecordingTTS(model_settings)
    yield tts
    tts.close()


@pytest.fixture(scope="module")
async def voice_url(
    model_settings: Any,
    multilingual_stt: Any,
    language_tts: RecordingTTS,
    vad_factory: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[str]:
    """A local voice server whose sessions start in English, on the default LLM (Qwen2.5-0.5B, which writes French
    and German; SmolLM2 does not)."""
    from parley.llama_server import LlamaServer

    settings = model_settings.model_copy(
        update={"llama_model_path": "", "llm_model": "qwen", "language": "en"}
    )
    log = tmp_path_factory.mktemp("qwen") / "llama-server.log"
    async with LlamaServer(settings, log_path=log) as llama:
        await multilingual_stt.warmup(
            ("fr", "de")
        )  # as the server warms its languages: no turn pays for loading
        await language_tts.warmup(("fr", "de"))
        url_settings = settings.model_copy(update={"llm_base_url": llama.base_url})
        async with local_voice_server(url_settings, multilingual_stt, language_tts, vad_factory) as url:
            yield url


def french_recording() -> bytes:
    from parley.bench import speech_corpus

    clips = {c.name: c for c in speech_corpus.asterisk_clips("fr", 10_000)}
    clip = clips[FRENCH_PROMPT]
    return float_to_pcm16(resample(clip.audio, speech_corpus.RATE, WIRE_RATE))


async def german_from_espeak() -> bytes:
    tts = espeak.EspeakTTS()
    try:
        return b"".join([c async for c in tts.synthesize(GERMAN_QUESTION, voice=espeak.PREFIX + "de")])
    finally:
        tts.close()


async def ask(conn: Any, speech: bytes) -> tuple[list[dict[str, Any]], bytes, float]:
    """The question as fast as the socket takes it, then 1.5 s of silence (the VAD ends the turn on the audio it
    counts, not on the clock); the events up to ``response.done``, the answer's audio, and the seconds from the
    last audio sent to the first audio of the answer."""
    silence = bytes(WIRE_RATE * 2 * 3 // 2)
    audio = bytes(WIRE_RATE * 2 // 5) + speech + silence
    for i in range(0, len(audio), 4800):
        await conn.input_audio_buffer.append(audio=base64.b64encode(audio[i : i + 4800]).decode())
    sent = time.monotonic()
    events: list[dict[str, Any]] = []
    pcm = bytearray()
    first_audio: float | None = None
    async with asyncio.timeout(120):
        while True:
            event = json.loads(await conn.recv_bytes())
            if event["type"] == "response.output_audio.delta":
                first_audio = first_audio or time.monotonic()
                pcm += base64.b64decode(event["delta"])
                continue
            events.append(event)
            if event["type"] == "error":
                raise AssertionError(f"error from the session: {event}")
            if event["type"] == "response.done":
                return events, bytes(pcm), (first_audio or time.monotonic()) - sent


def one(events: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [e for e in events if e["type"] == kind]
    assert len(found) == 1, (kind, [e["type"] for e in events])
    return found[0]


async def set_language(conn: Any, language: str) -> None:
    await conn.session.update(
        session={"type": "realtime", "audio": {"input": {"transcription": {"language": language}}}}
    )
    async with asyncio.timeout(10):
        while True:
            event = json.loads(await conn.recv_bytes())
            if event["type"] == "error":
                raise AssertionError(f"session.update refused: {event}")
            if event["type"] == "session.updated":
                assert event["session"]["audio"]["input"]["transcription"]["language"] == language, event
                return


async def refused_language(conn: Any, language: str) -> None:
    """The client gets the server's ``error`` naming the supported languages, and no ``session.updated``."""
    await conn.session.update(
        session={"type": "realtime", "audio": {"input": {"transcription": {"language": language}}}}
    )
    async with asyncio.timeout(10):
        event = json.loads(await conn.recv_bytes())
    assert event["type"] == "error", event
    error = event["error"]
    assert error["code"] == "invalid_value" and error["param"] == "session.audio.input.transcription.language"
    assert "en (English), fr (French), de (German)" in error["message"], error


async def spoken_turn(conn: Any, language: str, speech: bytes, heard_words: tuple[str, ...]) -> None:
    """Switch the session to ``language``, ask ``speech``: heard, answered and spoken in that language."""
    await set_language(conn, language)
    RecordingTTS.chosen = []
    events, audio, latency = await ask(conn, speech)
    voices = list(RecordingTTS.chosen)
    heard = one(events, "conversation.item.input_audio_transcription.completed")["transcript"]
    answer = one(events, "response.output_audio_transcript.done")["transcript"]
    logger.info("%s: heard %r, answered %r, first audio after %.2f s", language, heard, answer, latency)
    assert all(w in heard.lower() for w in heard_words), heard
    assert written_in(answer, language), (answer, function_words(answer))
    assert voices and set(voices) == {pico.BY_LANGUAGE[language]}, voices
    assert len(audio) > WIRE_RATE * 2 // 2, len(audio)  # at least half a second of speech


async def test_french_then_german_spoken_turns_through_the_relay(
    voice_url: str, language_tts: RecordingTTS, speech_recordings: None, require_setup: Any
) -> None:
    require_setup(espeak.available(), "espeak-ng is not installed")
    french, german = french_recording(), await german_from_espeak()
    # The audio goes in faster than real time (the VAD counts audio, not the clock): a burst the relay allows.
    async with running_relay(relay_settings(voice_url, audio_burst_ms=60_000)) as relay:
        client = AsyncOpenAI(base_url=f"{relay.http}/v1", api_key=token("polyglot"))
        async with client.realtime.connect(model="parley-local") as conn:
            created = json.loads(await conn.recv_bytes())
            assert created["type"] == "session.created"
            assert created["session"]["audio"]["input"]["transcription"]["language"] == "en"

            await spoken_turn(conn, "fr", french, ("dossier", "message"))
            await refused_language(conn, "es")  # through the relay's policy to the server, which refuses it
            await spoken_turn(conn, "de", german, ("bahnhof",))  # switched mid-session: this turn is German
