"""Grounded answers: does the model answer the knowledge base's questions right, with RAG off and on, per LLM?

``grounded_eval`` asks every question of ``rag/questions.json`` through a running relay, each in its own session
with the stock ``openai`` SDK, as a typed user message (a follow-up's previous question first, as its own turn);
it records the answer (the audio transcript), the relay's ``parley.context`` and the time from sending the question
to the first audio delta. ``run_grounded_bench`` starts a real ``parley up`` per model and RAG setting and writes
``docs/benchmarks/grounded.json``.

Scoring (deliberately simple, reported beside the figures):
- answerable (fact, paraphrase, follow_up): correct when the answer contains any of ``answer_contains``, case-
  insensitive, after number words become digits in both ("twenty-one" → "21", "five centimetres" → "5
  centimetres"). A key that starts or ends with a digit must not touch another digit or a decimal part ("7" does
  not match "17" or "7.5", "13:00" does not match "113:00").
- unanswerable: correct when the answer declines (one of ``REFUSALS``: "don't know", "not cover", "no
  information", "not in the documents", "can't find", ...), contains no digit (no made-up price, score, date or
  temperature), is at most ``MAX_REFUSAL_WORDS`` words (no made-up how-to after a polite "I'm not sure") and does
  not read out the injected text (``QUOTES_CONTEXT``: its wording such as "the user's last message", or a
  "[Title > Heading]" label). ``refused`` and ``quotes_context`` are reported for every answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from parley.bench.report import md_table, percentile
from parley.settings import Settings

logger = logging.getLogger(__name__)

ANSWERABLE = ("fact", "paraphrase", "follow_up")
KINDS = (*ANSWERABLE, "unanswerable")
MAX_REFUSAL_WORDS = 50
WARM_UP = "Hello!"
DEFAULT_BOX_MS = Settings.model_fields["context_timeout_ms"].default

# --- scoring ----------------------------------------------------------------------------------------------

_UNITS = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
]  # fmt: skip
_TENS = ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_NUMBER_WORDS = re.compile(
    r"\b(?:(?P<tens>" + "|".join(_TENS) + r")(?:[\s-]+(?P<unit>" + "|".join(_UNITS[1:10]) + r"))?"
    r"|(?P<small>" + "|".join(_UNITS) + r"))\b"
)

REFUSALS = re.compile(
    r"\b(?:"
    r"(?:do not|don't|does not|doesn't|did not|didn't) (?:know|have|cover|contain|include|mention|say|specify)"
    r"|not (?:sure|covered|mentioned|specified|included|available|provided|in the (?:documents?|knowledge base))"
    r"|(?:no|not any) (?:information|mention|details?|data|documents?|passages?|answer)"
    r"|(?:can't|cannot|can not|couldn't|could not|unable to|not able to) "
    r"(?:find|help|answer|tell|say|provide|predict|access|give)"
    r"|(?:nothing|none) (?:in|about|on)"
    r"|(?:outside|beyond) (?:the|my|what)"
    r")",
)
# The injected system item's own wording, or its "[Title > Heading]" labels, in an answer: the model read the
# context out instead of answering from it (spoken to the user as is).
QUOTES_CONTEXT = re.compile(
    r"user's last message|the last message|knowledge base passages|answer from them|knowledge base:"
    r"|if it asks for facts|small talk needs no documents|\[[^\]]{3,}\]"
)
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})


def _number_word(m: re.Match[str]) -> str:
    if m["small"]:
        return str(_UNITS.index(m["small"]))
    value = (_TENS.index(m["tens"]) + 2) * 10
    return str(value + (_UNITS.index(m["unit"]) if m["unit"] else 0))


def normalise(text: str) -> str:
    """Lower case, one kind of apostrophe, single spaces, number words (0-99) as digits."""
    text = " ".join(text.translate(_APOSTROPHES).lower().split())
    return _NUMBER_WORDS.sub(_number_word, text)


def contains_key(answer: str, key: str) -> bool:
    """``key`` in ``answer`` (both already normalised); a number is not matched inside a longer number."""
    if not key:
        return False
    start = 0
    while (i := answer.find(key, start)) >= 0:
        start = i + 1
        before, after = answer[:i], answer[i + len(key) :]
        if key[0].isdigit() and (before[-1:].isdigit() or re.search(r"\d[.,:]$", before)):
            continue
        if key[-1].isdigit() and (after[:1].isdigit() or re.match(r"[.,:]\d", after)):
            continue
        return True
    return False


def is_refusal(answer: str) -> bool:
    return bool(REFUSALS.search(normalise(answer)))


def score(question: dict[str, Any], answer: str) -> dict[str, Any]:
    """``correct``, ``refused`` and which key matched (answerable) for one answer."""
    norm = normalise(answer)
    refused = is_refusal(answer)
    quotes = bool(QUOTES_CONTEXT.search(norm))
    if question.get("kind") == "unanswerable":
        words = len(norm.split())
        digits = any(c.isdigit() for c in norm)
        return {
            "correct": refused and not digits and words <= MAX_REFUSAL_WORDS and not quotes,
            "refused": refused,
            "quotes_context": quotes,
            "matched": None,
        }
    matched = next((k for k in question.get("answer_contains", []) if contains_key(norm, normalise(k))), None)
    return {"correct": matched is not None, "refused": refused, "quotes_context": quotes, "matched": matched}


# --- asking through the relay -----------------------------------------------------------------------------


@dataclass
class Answer:
    text: str = ""
    context: dict[str, Any] = field(default_factory=dict)
    first_audio_ms: float | None = None
    first_text_ms: float | None = None
    total_ms: float | None = None
    status: str = ""  # of the response: completed, incomplete (max tokens), failed, cancelled
    error: str = ""
    error_events: list[str] = field(default_factory=list)


def relay_root(url: str) -> str:
    """``http://host:port`` of a relay given as its root, an http(s) URL or a ws(s) URL (``/v1/realtime?...``)."""
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme or "http")
    return f"{scheme}://{parts.netloc}"


async def _recv(conn: Any) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(await conn.recv_bytes())
    return event


async def _ask(conn: Any, text: str) -> Answer:
    """One typed user turn; returns once the response is done. The relay looks the text up and answers."""
    out = Answer()
    transcript: list[str] = []
    output_text: list[str] = []
    done_transcript = ""
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    t0 = time.perf_counter()
    await conn.conversation.item.create(item=item)
    await conn.response.create()
    while True:
        event = await _recv(conn)
        kind = event.get("type")
        ms = (time.perf_counter() - t0) * 1000.0
        if kind == "response.output_audio.delta":
            if out.first_audio_ms is None:
                out.first_audio_ms = ms
        elif kind in ("response.output_audio_transcript.delta", "response.output_text.delta"):
            if out.first_text_ms is None:
                out.first_text_ms = ms
            (transcript if "audio" in kind else output_text).append(str(event.get("delta") or ""))
        elif kind == "response.output_audio_transcript.done":
            done_transcript = str(event.get("transcript") or "")
        elif kind == "parley.context":
            out.context = event
        elif kind == "error":
            # Reported, not fatal: what counts is whether an answer completes (response.done below).
            err = event.get("error") or {}
            if err.get("code") != "response_cancel_not_active":
                out.error_events.append(str(err.get("message") or err.get("code") or event))
                logger.warning("error event for %r: %s", text, out.error_events[-1])
        elif kind == "response.done":
            out.total_ms = ms
            response = event.get("response") or {}
            out.status = str(response.get("status") or "")
            if out.status in ("failed", "cancelled"):  # "incomplete" = cut at max tokens: still an answer
                out.error = f"response {out.status}: {response.get('status_details')}"
            break
    out.text = (done_transcript or "".join(transcript) or "".join(output_text)).strip()
    return out


async def _session_ask(
    relay: str, token: str, texts: list[str], timeout_s: float
) -> tuple[list[Answer], str]:
    """A fresh session through the relay, ``texts`` asked in turn; the answers and an error, if any."""
    from openai import AsyncOpenAI

    answers: list[Answer] = []
    client = AsyncOpenAI(base_url=f"{relay}/v1", api_key=token)
    try:
        async with asyncio.timeout(timeout_s * len(texts)):
            # parley.context (the sources) and parley.session come only to clients that ask for them
            connect = client.realtime.connect(model="parley-local", extra_query={"parley_events": "true"})
            async with connect as conn:
                while True:  # the relay's first word; items sent after it follow its session.update upstream
                    first = await _recv(conn)
                    if first.get("type") == "parley.session":
                        if first.get("status") != "active":
                            return answers, f"session {first.get('status')}: {first.get('message', '')}"
                        break
                for text in texts:
                    answers.append(await _ask(conn, text))
    except TimeoutError:
        return answers, f"timed out after {timeout_s:.0f} s per turn"
    except Exception as exc:  # a broken session is a failed question, not a failed benchmark
        logger.warning("session failed: %r", exc)
        return answers, f"{type(exc).__name__}: {exc}"
    finally:
        await client.close()
    return answers, ""


def _hit(question: dict[str, Any], context: dict[str, Any]) -> bool | None:
    expected = question.get("expected_source")
    if not expected:
        return None
    sources = {s.get("source") for s in context.get("sources", [])}
    return bool(sources & {expected, *question.get("also_in", [])})


async def grounded_eval(
    base_url: str, token: str, questions: list[dict[str, Any]], *, timeout_s: float
) -> dict[str, Any]:
    """Ask every question through the relay at ``base_url`` (root, http or ws URL) with the JWT ``token``."""
    relay = relay_root(base_url)
    await _session_ask(relay, token, [WARM_UP], timeout_s)  # first call into the models pays one-off costs
    rows: list[dict[str, Any]] = []
    for n, q in enumerate(questions, 1):
        texts = [q["previous"], q["question"]] if q.get("previous") else [q["question"]]
        answers, error = await _session_ask(relay, token, texts, timeout_s)
        a = answers[-1] if len(answers) == len(texts) else Answer()
        row: dict[str, Any] = {
            "question": q["question"],
            "kind": q.get("kind"),
            "previous": q.get("previous"),
            "previous_answer": answers[0].text if len(texts) == 2 and answers else None,
            "expected_source": q.get("expected_source"),
            "answer_contains": q.get("answer_contains", []),
            "answer": a.text,
            **score(q, a.text),
            "context_status": a.context.get("status"),
            "sources": [s.get("source") for s in a.context.get("sources", [])],
            "passages": [
                {k: s.get(k) for k in ("source", "heading", "score", "snippet")}
                for s in a.context.get("sources", [])
            ],
            "best_score": a.context.get("best_score"),
            "source_hit": _hit(q, a.context) if a.context.get("status") == "ok" else None,
            "retrieval_ms": a.context.get("retrieval_ms"),
            "first_audio_ms": a.first_audio_ms,
            "first_text_ms": a.first_text_ms,
            "total_ms": a.total_ms,
            "status": a.status,
            "error": error or a.error,
            "error_events": [e for x in answers for e in x.error_events],
        }
        if row["error"]:
            row["correct"] = False
        rows.append(row)
        logger.info(
            "%d/%d %s %s: %r -> %r (%s ms)",
            n,
            len(questions),
            "OK " if row["correct"] else "BAD",
            q.get("kind"),
            q["question"],
            a.text[:120],
            None if a.first_audio_ms is None else round(a.first_audio_ms),
        )
    return {"rows": rows, "totals": totals(rows)}


def totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    by_kind = {
        kind: {"correct": sum(1 for r in rows if r["kind"] == kind and r["correct"]), "n": 0}
        for kind in KINDS
    }
    for r in rows:
        if r["kind"] in by_kind:
            by_kind[r["kind"]]["n"] += 1
    answerable = [r for r in rows if r["kind"] in ANSWERABLE]
    first_audio = [r["first_audio_ms"] for r in rows if r["first_audio_ms"] is not None and not r["error"]]
    return {
        "by_kind": by_kind,
        "answerable": {"correct": sum(r["correct"] for r in answerable), "n": len(answerable)},
        "answerable_refused": sum(1 for r in answerable if r["refused"]),
        "quotes_context": sum(1 for r in rows if r["quotes_context"]),
        "unanswerable": by_kind["unanswerable"],
        "source_hits": sum(1 for r in answerable if r["source_hit"]),
        "context_status": _counts(str(r["context_status"]) for r in rows),
        "errors": sum(1 for r in rows if r["error"]),
        "error_events": sum(len(r["error_events"]) for r in rows),
        "cut_at_max_tokens": sum(1 for r in rows if r["status"] == "incomplete"),
        # lookups slower than the relay's default time box (a spoken turn would have been answered without them)
        "lookups_over_default_box": sum(
            1 for r in rows if r["retrieval_ms"] is not None and r["retrieval_ms"] > DEFAULT_BOX_MS
        ),
        "first_audio_ms": {
            "n": len(first_audio),
            "p50": statistics.median(first_audio) if first_audio else None,
            "p95": percentile(first_audio, 95) if first_audio else None,
        },
    }


def _counts(values: Iterator[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


# --- the benchmark: a real `parley up` per model and RAG setting ------------------------------------------


# What this measures is the model's grounding, so the relay waits for every lookup (the default 150 ms time box is
# for spoken turns on an idle machine; ``retrieval_ms`` per row shows how many lookups would have missed it), and a
# long answer is not cut by the relay's idle timer (a typed client sends nothing while it listens).
BENCH_ENV = {
    "PARLEY_LLM_TEMPERATURE": "0",
    "PARLEY_CONTEXT_TIMEOUT_MS": "3000",
    "PARLEY_IDLE_TIMEOUT_S": "600",
}


def load_questions(path: Path | None = None) -> list[dict[str, Any]]:
    """rag/questions.json (a list, or ``{"questions": [...]}``)."""
    if path is None:
        from parley.rag.ingest import samples_dir

        samples = samples_dir()
        if samples is None:
            raise FileNotFoundError("rag/samples not found (run from the repository)")
        path = samples.parent / "questions.json"
    data = json.loads(path.read_text())
    questions: list[dict[str, Any]] = data["questions"] if isinstance(data, dict) else data
    return questions


def _out_path(out: str) -> Path:
    p = Path(out)
    return p if p.suffix == ".json" else p / "grounded.json"


async def run_grounded_bench(
    settings: Settings,
    models: list[str],
    out: str,
    *,
    questions: list[dict[str, Any]] | None = None,
    timeout_s: float = 120.0,
) -> dict[str, Any]:
    """For each model, RAG off then on: a fresh ``parley up`` (temperature 0, an empty knowledge base that it fills
    with the samples), every question asked; results written to ``out`` (a .json file or its folder)."""
    from parley import llm_models
    from parley.bench.turn import _parley_up

    questions = questions if questions is not None else load_questions()
    runs: list[dict[str, Any]] = []
    for model in models:
        try:  # joins a split model once, before the clock of a start-up is running
            gguf = await asyncio.to_thread(llm_models.model_path, model)
        except Exception as exc:
            logger.error("model %s is not available: %s", model, exc)
            runs.append({"model": model, "error": str(exc)})
            continue
        for rag in (False, True):
            load_before = os.getloadavg()
            env = {**BENCH_ENV, "PARLEY_LLAMA_MODEL_PATH": model, "PARLEY_RAG_ENABLED": str(rag).lower()}
            logger.info("grounded answers: %s, RAG %s", model, "on" if rag else "off")
            started = time.perf_counter()
            with tempfile.TemporaryDirectory(prefix="parley-grounded-kb-") as kb:
                async with _parley_up(settings, env={**env, "PARLEY_KB_DIR": kb}) as (url, token):
                    startup_s = time.perf_counter() - started
                    result = await grounded_eval(url, token, questions, timeout_s=timeout_s)
            runs.append(
                {
                    "model": model,
                    "gguf": gguf.name,
                    "rag": rag,
                    "startup_s": round(startup_s, 1),
                    # other work on the machine skews the latencies: the 1-minute load around the run
                    "loadavg_1m": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
                    **result,
                }
            )
    results: dict[str, Any] = {
        "questions": len(questions),
        "setup": "parley up (relay → local voice server → llama.cpp server, 2 threads), temperature 0, typed "
        "questions through the relay with the openai SDK, one session per question, context time box 3 s",
        "env": BENCH_ENV,
        "scoring": __doc__.split("Scoring", 1)[1].strip() if __doc__ else "",
        "runs": runs,
    }
    results["markdown"] = markdown(results)
    path = _out_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")
    logger.info("grounded answers written to %s", path)
    return results


def markdown(results: dict[str, Any]) -> str:
    rows: list[list[object]] = []
    for run in results["runs"]:
        if "error" in run and "totals" not in run:
            rows.append([run["model"], "—", run["error"], *[""] * 9])
            continue
        t = run["totals"]
        k = t["by_kind"]
        fa = t["first_audio_ms"]
        rows.append(
            [
                run["model"],
                "on" if run["rag"] else "off",
                f"{t['answerable']['correct']}/{t['answerable']['n']}",
                " · ".join(f"{k[x]['correct']}/{k[x]['n']}" for x in ANSWERABLE),
                f"{t['unanswerable']['correct']}/{t['unanswerable']['n']}",
                t["answerable_refused"],
                float("nan") if fa["p50"] is None else float(fa["p50"]),
                float("nan") if fa["p95"] is None else float(fa["p95"]),
                t["quotes_context"],
                t["cut_at_max_tokens"],
                t["errors"],
                "–".join(f"{x:.1f}" for x in run.get("loadavg_1m", [])),
            ]
        )
    table = md_table(
        [
            "model",
            "RAG",
            "answerable correct",
            "fact · paraphrase · follow-up",
            "unanswerable declined",
            "answerable refused",
            "typed question → first audio p50 ms",
            "p95",
            "answers quoting the injected text",
            "answers cut at max tokens",
            "errors",
            "load (1 min, before–after)",
        ],
        rows,
    )
    return (
        f"{results['questions']} questions from rag/questions.json; {results['setup']}.\n\n{table}\n\n"
        "An answer is correct when it contains one of the question's key strings (number words read as digits, a "
        "number never matched inside a longer one); an unanswerable question is declined when the answer says "
        f"the documents do not cover it (or similar), has no digit, at most {MAX_REFUSAL_WORDS} words and does not "
        "read the injected text out (its wording, or a [Title > Heading] label)."
    )
