"""``parley bench turn``: replay spoken turns against a local voice server and time each stage.

Each turn opens a session, streams a Piper-spoken question at real-time pace (40 ms chunks, followed by silence so
the server VAD ends the turn), and times, relative to ``input_audio_buffer.speech_stopped``:
transcript (``...input_audio_transcription.completed``), ``response.created``, LLM first token (from the server's
``parley.timing`` event when it sends one), first ``response.output_audio.delta``, and ``response.done``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from parley.bench.report import box_plot, md_table, summary, write_section
from parley.realtime.audio import BYTES_PER_MS, WIRE_RATE, pcm_to_b64
from parley.settings import Settings

logger = logging.getLogger(__name__)

QUESTIONS = [
    "What is the capital of France?",
    "How far away is the moon?",
    "Can you recommend a good book?",
    "What is the weather like on Mars?",
    "How do I boil an egg?",
    "Why is the sky blue?",
    "Tell me a fun fact about cats.",
    "What time zone is London in?",
    "How many legs does a spider have?",
    "What should I cook for dinner tonight?",
]
CHUNK_MS = 40
STAGES = ["transcript", "response_created", "llm_first_token", "first_audio", "response_done"]
# What the person hears: from the acoustic end of their speech (not the VAD's speech_stopped, which comes a
# silence_duration_ms later) to the first audio of the answer.
USER_STAGE = "speech_end_to_first_audio"


def acoustic_end_ms(pcm: bytes, threshold: int = 500) -> float:
    """Where the last sample louder than ``threshold`` (about -36 dBFS) lies, in ms from the clip's start."""
    samples = np.abs(np.frombuffer(pcm, dtype=np.int16).astype(np.int32))
    loud = np.flatnonzero(samples > threshold)
    return 0.0 if loud.size == 0 else float(loud[-1] + 1) * 1000.0 / WIRE_RATE


@dataclass
class TurnTimes:
    question: str
    marks: dict[str, float] = field(default_factory=dict)
    server: dict[str, float] = field(default_factory=dict)
    transcript: str = ""
    answer: str = ""
    context: dict[str, Any] = field(default_factory=dict)  # the relay's parley.context, when there is one
    error: str = ""

    def stage_ms(self) -> dict[str, float]:
        t0 = self.marks.get("speech_stopped")
        if t0 is None:
            return {}
        out = {
            k: (v - t0) * 1000.0 for k, v in self.marks.items() if k not in ("speech_stopped", "speech_end")
        }
        if "llm_first_token_ms" in self.server:
            out["llm_first_token"] = self.server["llm_first_token_ms"]
        if "speech_end" in self.marks and "first_audio" in self.marks:
            out[USER_STAGE] = (self.marks["first_audio"] - self.marks["speech_end"]) * 1000.0
        return out


async def _stream_audio(ws: Any, pcm: bytes, times: TurnTimes) -> None:
    step = CHUNK_MS * BYTES_PER_MS
    start = time.monotonic()
    times.marks["speech_end"] = start + acoustic_end_ms(pcm) / 1000.0  # paced in real time from here
    for i, off in enumerate(range(0, len(pcm), step)):
        chunk = pcm[off : off + step]
        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": pcm_to_b64(chunk)}))
        delay = start + (i + 1) * CHUNK_MS / 1000.0 - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


async def one_turn(
    url: str, question: str, pcm: bytes, timeout_s: float = 60.0, *, token: str = ""
) -> TurnTimes:
    """One spoken turn. With ``token`` the URL is a relay: it owns the session, so no session.update is sent."""
    import websockets

    times = TurnTimes(question)
    names = {
        "input_audio_buffer.speech_started": "speech_started",
        "input_audio_buffer.speech_stopped": "speech_stopped",
        "conversation.item.input_audio_transcription.completed": "transcript",
        "response.created": "response_created",
        "response.output_audio.delta": "first_audio",
        "response.done": "response_done",
    }
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with websockets.connect(url, max_size=None, additional_headers=headers) as ws:
        if not token:
            await ws.send(
                json.dumps(
                    {
                        "type": "session.update",
                        "session": {"type": "realtime", "instructions": "Answer in one short sentence."},
                    }
                )
            )
        async with asyncio.timeout(timeout_s), asyncio.TaskGroup() as tg:
            sender = tg.create_task(_stream_audio(ws, pcm, times))
            async for raw in ws:
                now = time.monotonic()
                event = json.loads(raw)
                kind = event.get("type", "")
                mark = names.get(kind)
                if mark and mark not in times.marks:
                    times.marks[mark] = now
                if kind == "conversation.item.input_audio_transcription.completed":
                    times.transcript = event.get("transcript", "")
                elif kind == "parley.context":
                    times.context = event
                elif kind == "response.output_audio_transcript.delta":
                    times.answer += str(event.get("delta") or "")
                elif kind == "parley.timing":
                    times.server.update({k: float(v) for k, v in event.items() if k.endswith("_ms")})
                elif kind == "error":
                    times.error = event.get("error", {}).get("message", "error")
                elif kind == "response.done":
                    sender.cancel()
                    break
    return times


async def _run(url: str, turns: int, token: str = "") -> list[TurnTimes]:
    from parley.bench.speech import speak

    clips = {q: speak(q, lead_silence_ms=300, tail_silence_ms=1200) for q in QUESTIONS}
    results = []
    # One warm-up turn, not counted: the first call into each model pays one-off costs.
    await one_turn(url, QUESTIONS[0], clips[QUESTIONS[0]], token=token)
    for i in range(turns):
        q = QUESTIONS[i % len(QUESTIONS)]
        t = await one_turn(url, q, clips[q], token=token)
        logger.info("turn %d: %s -> %s", i + 1, q, {k: round(v) for k, v in t.stage_ms().items()})
        results.append(t)
    return results


def plot_turns(path: Path, stages: list[dict[str, float]], where: str) -> None:
    """Box plot of the stages up to the first audio (response_done would dwarf them), plus the user's wait."""
    shown = [s for s in STAGES if s != "response_done"] + [USER_STAGE]
    series = {s.replace("_to_", " to\n").replace("_", " "): [t[s] for t in stages if s in t] for s in shown}
    box_plot(
        path,
        series,
        title=f"{where}: ms after speech_stopped (last box: after the end of speech)",
        ylabel="ms",
    )


def _report(results: list[TurnTimes], out: Path, *, setup: str, via_relay: bool) -> None:
    name = "turn_relay" if via_relay else "turn"
    where = "Through the relay" if via_relay else "Local voice server"
    per_stage: dict[str, list[float]] = {s: [] for s in STAGES}
    for t in results:
        for k, v in t.stage_ms().items():
            if k in per_stage:
                per_stage[k].append(v)
    user = [t.stage_ms()[USER_STAGE] for t in results if USER_STAGE in t.stage_ms()]
    rows = []
    for stage in STAGES:
        s = summary(per_stage[stage])
        rows.append([stage, int(s["n"]), s["p50"], s["p95"], s["min"], s["max"]])
    u = summary(user)
    rows.append(
        [
            f"*{USER_STAGE}* (from the acoustic end of speech)",
            int(u["n"]),
            u["p50"],
            u["p95"],
            u["min"],
            u["max"],
        ]
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(
        json.dumps(
            [
                {"question": t.question, "heard": t.transcript, "error": t.error, **t.stage_ms()}
                for t in results
            ],
            indent=1,
        )
    )
    plot = out / f"{name}.png"
    plot_turns(plot, [t.stage_ms() for t in results], where)
    errors = sum(1 for t in results if t.error)
    body = (
        f"## `parley bench turn{' --via-relay' if via_relay else ''}`\n\n"
        f"{setup}\n\n{len(results)} turns, {errors} with an error event. Milliseconds after "
        "`input_audio_buffer.speech_stopped`:\n\n"
        + md_table(["stage", "n", "p50 ms", "p95 ms", "min", "max"], rows)
        + f"\n\n![turn stages]({plot.relative_to(Path('docs')) if plot.is_relative_to('docs') else plot})\n"
    )
    write_section(name.replace("_", "-"), body)


async def run_turn_bench(
    settings: Settings, *, turns: int, url: str, out: str, via_relay: bool = False
) -> int:
    setup = (
        "Packaged models on CPU: faster-whisper tiny.en int8, SmolLM2-135M-Instruct Q4_1 on llama.cpp's server, "
        "Piper en_US-joe-medium; questions spoken by Piper and streamed at real-time pace in 40 ms chunks."
    )
    token = ""
    async with contextlib.AsyncExitStack() as stack:
        if via_relay:
            setup += (
                " Through the relay (`parley up`: relay → local voice server, which the relay configures with "
                "`create_response=false` and answers with its own `response.create` after the transcript)."
            )
            url, token = await stack.enter_async_context(_parley_up(settings))
        elif not url:
            from parley.llama_server import LlamaServer
            from parley.procs import free_port
            from parley.up import local_server_process

            llama = await stack.enter_async_context(LlamaServer(settings))
            port = free_port()
            await stack.enter_async_context(local_server_process(settings, port, llm_base_url=llama.base_url))
            url = f"ws://127.0.0.1:{port}/v1/realtime?model=parley-local"
        results = await _run(url, turns, token)
    _report(results, Path(out), setup=setup, via_relay=via_relay)
    return 0


@contextlib.asynccontextmanager
async def _parley_up(settings: Settings, env: dict[str, str] | None = None) -> AsyncIterator[tuple[str, str]]:
    """A real ``parley up`` child with a known secret and limits that a benchmark's many sessions fit in
    (``env``: more settings for it)."""
    import os
    import secrets
    import sys

    from pydantic import SecretStr

    from parley.procs import ChildProcess, free_port
    from parley.relay.auth import mint_token

    secret = secrets.token_urlsafe(32)
    port = free_port()
    env = {
        **os.environ,
        "PARLEY_JWT_SECRET": secret,
        "PARLEY_SESSIONS_PER_HOUR": "100000",
        "PARLEY_LOG_JSON": "false",
        **(env or {}),
    }
    argv = [sys.executable, "-m", "parley.cli", "up", "--host", "127.0.0.1", "--port", str(port)]
    async with ChildProcess("parley-up", argv, env=env, ready_url=f"http://127.0.0.1:{port}/readyz"):
        token = mint_token(settings.model_copy(update={"jwt_secret": SecretStr(secret)}), "bench", ttl_s=3600)
        yield f"ws://127.0.0.1:{port}/v1/realtime?provider=local&parley_events=true", token
