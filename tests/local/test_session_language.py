"""A session's language on the local voice server: the server's default (``PARLEY_LANGUAGE``) and the client's
``audio.input.transcription.language``. Speech to text, the LLM's "answer in ..." line and the voice follow it; a
change applies from the next turn; an unsupported language is refused by name and changes nothing.

The fake engines record the language each call was given (``FakeSTT.languages``, ``WordTTS.languages``) and the
LLM its messages. Conditions are awaited, never slept for.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from session_fakes import (
    EnergyVad,
    FakeSTT,
    Harness,
    ScriptedLLM,
    WordTTS,
    fake_engines,
    running,
    silence,
    speech,
)

from parley.local.protocol import LocalProtocol

LINES = {"en": "Answer in English.", "fr": "Réponds en français.", "de": "Antworte auf Deutsch."}


def engines_and_fakes() -> tuple[Any, FakeSTT, WordTTS, ScriptedLLM]:
    engines = fake_engines()
    stt, tts, llm = engines.stt, engines.tts, engines.llm
    assert isinstance(stt, FakeSTT) and isinstance(tts, WordTTS) and isinstance(llm, ScriptedLLM)
    return engines, stt, tts, llm


async def spoken_turn(h: Harness) -> list[dict[str, Any]]:
    """Speech, then silence: the server commits the turn and answers it by itself."""
    await h.append(speech(600))
    await h.append(silence(700))
    return await h.collect_until("response.done")


def system_line(llm: ScriptedLLM, call: int = -1) -> str:
    system = llm.calls[call][0]
    assert system["role"] == "system"
    return str(system["content"]).rsplit("\n", 1)[-1]


def set_language(language: str | None) -> dict[str, Any]:
    return {"audio": {"input": {"transcription": {"language": language}}}}


async def test_the_server_default_language_is_heard_answered_and_spoken() -> None:
    engines, stt, tts, llm = engines_and_fakes()
    async with running(engines, language="de") as h:
        created = next(e for e in h.seen if e["type"] == "session.created")
        assert created["session"]["audio"]["input"]["transcription"]["language"] == "de"
        await spoken_turn(h)
    assert stt.languages and set(stt.languages) == {"de"}
    assert system_line(llm) == LINES["de"]
    assert tts.spoken and set(tts.languages) == {"de"}


async def test_the_client_language_applies_from_the_next_turn() -> None:
    engines, stt, tts, llm = engines_and_fakes()
    llm.gate = asyncio.Event()  # every answer holds after its first delta until the gate opens
    async with running(engines) as h:
        updated = await h.update(**set_language("fr-FR"))
        assert updated["session"]["audio"]["input"]["transcription"]["language"] == "fr"
        await h.append(speech(600))
        await h.append(silence(700))
        await h.expect("response.created")
        await h.expect("response.output_audio_transcript.delta")  # the French answer is being spoken

        # Mid-answer, the user switches to German: this answer stays French, the next turn is German.
        updated = await h.update(**set_language("de"))
        assert updated["session"]["audio"]["input"]["transcription"]["language"] == "de"
        llm.gate.set()
        await h.expect("response.done")
        first = len(tts.languages)
        assert set(stt.languages) == {"fr"} and system_line(llm) == LINES["fr"]
        assert set(tts.languages) == {"fr"}

        await spoken_turn(h)
    assert stt.languages[-1] == "de"
    assert system_line(llm) == LINES["de"]
    assert len(tts.languages) > first and set(tts.languages[first:]) == {"de"}


async def test_an_unsupported_language_is_refused_by_name_and_changes_nothing() -> None:
    engines, stt, tts, llm = engines_and_fakes()
    async with running(engines) as h:
        await h.update(**set_language("fr"))
        await h.send(
            {
                "type": "session.update",
                "event_id": "evt_es",
                "session": {"type": "realtime", "instructions": "Be brief.", **set_language("es")},
            }
        )
        error = await h.expect("error")
        assert error["error"]["event_id"] == "evt_es"
        body = error["error"]
        assert body["type"] == "invalid_request_error" and body["code"] == "invalid_value"
        assert body["param"] == "session.audio.input.transcription.language"
        assert "'es'" in body["message"] and "en (English), fr (French), de (German)" in body["message"]
        assert not [e for e in await h.settle() if e["type"] == "session.updated"]  # nothing applied
        assert h.session.protocol.config.instructions != "Be brief."

        await spoken_turn(h)  # still French
    assert set(stt.languages) == {"fr"}
    assert system_line(llm) == LINES["fr"]
    assert set(tts.languages) == {"fr"}


async def test_a_null_language_goes_back_to_the_server_default() -> None:
    async with running(language="fr") as h:
        updated = await h.update(**set_language("de"))
        assert updated["session"]["audio"]["input"]["transcription"]["language"] == "de"
        updated = await h.update(**set_language(None))
        assert updated["session"]["audio"]["input"]["transcription"]["language"] == "fr"


def test_the_transcription_model_echoed_is_the_one_for_the_language() -> None:
    models = {"en": "tiny.en"}
    p = LocalProtocol(vad_factory=EnergyVad, stt_model=lambda language: models.get(language, "base"))
    created = p.created()[0]
    assert created["session"]["audio"]["input"]["transcription"]["model"] == "tiny.en"
    update = {"type": "session.update", "session": {"type": "realtime", **set_language("de")}}
    (updated,) = p.receive(json.dumps(update))
    assert isinstance(updated, dict) and updated["type"] == "session.updated"
    tx = updated["session"]["audio"]["input"]["transcription"]
    assert (tx["model"], tx["language"]) == ("base", "de")


def test_transcription_turned_off_and_on_again_still_shows_the_model_that_transcribes() -> None:
    p = LocalProtocol(vad_factory=EnergyVad, stt_model=lambda language: f"stt-{language}")
    p.created()
    for transcription in (None, {}):
        update = {"type": "session.update", "session": {"type": "realtime", "audio": {"input": {}}}}
        update["session"]["audio"]["input"]["transcription"] = transcription
        (updated,) = p.receive(json.dumps(update))
    assert isinstance(updated, dict) and updated["type"] == "session.updated"
    assert updated["session"]["audio"]["input"]["transcription"]["model"] == "stt-en"  # was whisper-1
