"""``parley bench rag``: the knowledge base's speed and quality, and what it costs a spoken turn.

Sections (each can be skipped):
1. retrieval: hybrid search p50/p95 at 1k/10k/100k generated chunks (embedded store; Weaviate too when
   ``PARLEY_WEAVIATE_URL`` is set), and the query embedding's own time;
2. recall@1/3/5 on the sample knowledge base and rag/questions.json: hybrid vs vector-only vs keywords-only, and
   how the similarity floor separates answerable from unanswerable questions;
3. turns through a real ``parley up``: RAG off, on (looked up at speech end), on with speculation (looked up
   during the pause);
4. grounded answers (``parley.bench.grounded``): RAG off vs on, per model.
Results: docs/benchmarks/rag.json, rag.png, and the ``rag`` section of docs/benchmarks.md.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from parley.bench.report import box_plot, md_table, summary, write_section
from parley.settings import Settings

logger = logging.getLogger(__name__)

K = 5


def load_questions() -> list[dict[str, Any]]:
    from parley.rag.ingest import samples_dir

    samples = samples_dir()
    if samples is None:
        raise FileNotFoundError("rag/samples not found (run from the repository)")
    data: list[dict[str, Any]] = json.loads((samples.parent / "questions.json").read_text())["questions"]
    return data


async def recall(settings: Settings, questions: list[dict[str, Any]]) -> dict[str, Any]:
    """Recall@k of the expected document, per fusion weight, on the sample knowledge base (a fresh copy)."""
    import asyncio

    from parley.rag.embedded import EmbeddedStore
    from parley.rag.ingest import ensure_samples
    from parley.rag.stores import make_embedder
    from parley.relay.context import build_query, display_source

    embedder = make_embedder(settings)
    with tempfile.TemporaryDirectory() as tmp:
        store = EmbeddedStore(Path(tmp), embedder.name, embedder.dim)
        await ensure_samples(store, embedder, "bench")
        modes = {"hybrid": settings.rag_alpha, "vector only": 1.0, "keywords only": 0.0}
        table: dict[str, dict[str, float]] = {}
        best: dict[str, list[float]] = {"answerable": [], "unanswerable": []}
        misses: list[dict[str, Any]] = []
        for mode, alpha in modes.items():
            ranks: list[int | None] = []
            for q in questions:
                query = build_query(q["question"], q.get("previous"))
                vec = (await asyncio.to_thread(embedder.embed_queries, [query]))[0]
                hits = await store.search("bench", query, vec, k=K * 3, alpha=alpha)
                names = list(dict.fromkeys(display_source(h.chunk.source) for h in hits))[:K]
                if mode == "hybrid":
                    top = max((h.similarity for h in hits), default=0.0)
                    best["unanswerable" if q.get("expected_source") is None else "answerable"].append(top)
                if q.get("expected_source") is None:
                    continue
                targets = {q["expected_source"], *q.get("also_in", [])}  # files that answer it
                rank = next((i + 1 for i, n in enumerate(names) if n in targets), None)
                ranks.append(rank)
                if mode == "hybrid" and (rank is None or rank > 3):
                    misses.append({"question": q["question"], "expected": q["expected_source"], "got": names})
            n = len(ranks)
            table[mode] = {
                f"recall@{k}": sum(1 for r in ranks if r is not None and r <= k) / n for k in (1, 3, 5)
            }
            table[mode]["n"] = n
        await store.aclose()
    floor = settings.rag_min_similarity
    return {
        "modes": table,
        "best_similarity": best,
        "floor": floor,
        "answerable_above_floor": sum(1 for s in best["answerable"] if s >= floor),
        "unanswerable_below_floor": sum(1 for s in best["unanswerable"] if s < floor),
        "hybrid_misses_top3": misses,
    }


async def retrieval(settings: Settings, sizes: list[int]) -> dict[str, Any]:
    from parley.bench.rag_store import retrieval_latency
    from parley.rag.stores import make_embedder

    # the query embedding is timed there too (one query at a time, 200 runs)
    return await retrieval_latency(sizes=tuple(sizes), embedder=make_embedder(settings))


SHORT = {
    "RAG off": "RAG off",
    "RAG on, looked up at speech end": "RAG on,\nat speech end",
    "RAG on, speculative (during the pause)": "RAG on,\nspeculative",
}
CONFIGS = [
    ("RAG off", {"PARLEY_RAG_ENABLED": "false"}),
    ("RAG on, looked up at speech end", {"PARLEY_RAG_SPECULATIVE": "false"}),
    ("RAG on, speculative (during the pause)", {}),
]


async def turn_latency(settings: Settings, questions: list[dict[str, Any]], turns: int) -> dict[str, Any]:
    """Spoken knowledge-base questions through a real ``parley up``, once per configuration."""
    from parley.bench.speech import speak
    from parley.bench.turn import USER_STAGE, _parley_up, one_turn

    spoken = [q["question"] for q in questions if q.get("kind") == "fact"][:10]
    clips = {q: speak(q, lead_silence_ms=300, tail_silence_ms=1200) for q in spoken}
    out: dict[str, Any] = {}
    for name, env in CONFIGS:
        with tempfile.TemporaryDirectory() as kb_dir:
            env = {**env, "PARLEY_KB_DIR": kb_dir}
            async with _parley_up(settings, env=env) as (url, token):
                await one_turn(url, spoken[0], clips[spoken[0]], token=token)  # warm-up, not counted
                rows = []
                for i in range(turns):
                    q = spoken[i % len(spoken)]
                    t = await one_turn(url, q, clips[q], token=token)
                    stages = t.stage_ms()
                    ctx = t.context
                    rows.append(
                        {
                            "question": q,
                            "heard": t.transcript,
                            "answer": t.answer,
                            "error": t.error,
                            "first_audio": stages.get("first_audio"),
                            USER_STAGE: stages.get(USER_STAGE),
                            "context_status": ctx.get("status"),
                            "speculative": ctx.get("speculative"),
                            "retrieval_ms": ctx.get("retrieval_ms"),
                            "wait_ms": ctx.get("wait_ms"),
                            "sources": [s.get("source") for s in ctx.get("sources", [])],
                        }
                    )
                    logger.info(
                        "%s, turn %d: %s", name, i + 1, {k: rows[-1][k] for k in ("first_audio", "wait_ms")}
                    )
        out[name] = rows
    return out


def _vals(rows: list[dict[str, Any]], key: str) -> list[float]:
    return [float(r[key]) for r in rows if isinstance(r.get(key), (int, float))]


def report(results: dict[str, Any], out: Path) -> None:
    from parley.bench.turn import USER_STAGE

    out.mkdir(parents=True, exist_ok=True)
    (out / "rag.json").write_text(json.dumps(results, indent=1))
    parts = ["## `parley bench rag`\n"]
    if "retrieval" in results:
        rows = [
            [f"{int(size):,}", r["p50"], r["p95"]]
            for size, r in sorted(results["retrieval"]["sizes"].items(), key=lambda kv: int(kv[0]))
        ]
        e = results.get("embed", {})
        parts.append(
            "### Retrieval speed (embedded store: SQLite FTS5 + numpy, 384 dims, generated corpus)\n\n"
            "Hybrid search alone (the query vector given), ms:\n\n"
            + md_table(["chunks", "p50 ms", "p95 ms"], rows)
            + (
                f"\n\nQuery embedding (all-MiniLM-L6-v2 in numpy): p50 {e['p50']:.1f} ms, p95 {e['p95']:.1f} ms."
                if e
                else ""
            )
        )
    if "recall" in results:
        rec = results["recall"]
        rows = [
            [mode, int(v["n"]), f"{v['recall@1']:.2f}", f"{v['recall@3']:.2f}", f"{v['recall@5']:.2f}"]
            for mode, v in rec["modes"].items()
        ]
        a, u = rec["best_similarity"]["answerable"], rec["best_similarity"]["unanswerable"]
        parts.append(
            "### Recall on the sample knowledge base (rag/questions.json, answerable questions)\n\n"
            + md_table(["search", "n", "recall@1", "recall@3", "recall@5"], rows)
            + f"\n\nSimilarity floor {rec['floor']}: {rec['answerable_above_floor']}/{len(a)} answerable questions "
            f"have a passage above it, {rec['unanswerable_below_floor']}/{len(u)} unanswerable ones have none."
        )
    if "turns" in results:
        rows = []
        series: dict[str, list[float]] = {}
        for name, trows in results["turns"].items():
            fa, ue, wait = _vals(trows, "first_audio"), _vals(trows, USER_STAGE), _vals(trows, "wait_ms")
            ret = _vals(trows, "retrieval_ms")
            spec = sum(
                1 for r in trows if r.get("speculative") and r.get("context_status") in ("ok", "empty")
            )
            sf, su, sw = summary(fa), summary(ue), summary(wait)
            rows.append(
                [
                    name,
                    len(trows),
                    su["p50"],
                    su["p95"],
                    sf["p50"],
                    sf["p95"],
                    sw["p50"],
                    sw["p95"],
                    summary(ret)["p50"],
                    f"{spec}/{len(trows)}",
                ]
            )
            series[SHORT.get(name, name)] = ue
        plot = out / "rag.png"
        box_plot(plot, series, title="End of speech → first audio through the relay (ms)", ylabel="ms")
        parts.append(
            "### Spoken turns through `parley up` (knowledge-base questions spoken by Piper)\n\n"
            + md_table(
                [
                    "configuration",
                    "turns",
                    "speech end → first audio p50",
                    "p95",
                    "speech_stopped → first audio p50",
                    "p95",
                    "retrieval wait at speech end p50",
                    "p95",
                    "lookup ms p50",
                    "speculative",
                ],
                rows,
            )
            + "\n\n![RAG turn latency](benchmarks/rag.png)"
        )
    if "grounded" in results:
        parts.append("### Grounded answers\n\n" + results["grounded"].get("markdown", ""))
    write_section("rag", "\n\n".join(parts))


async def run_rag_bench(
    settings: Settings, *, sizes: list[int], turns: int, out: str, sections: list[str], models: list[str]
) -> int:
    results: dict[str, Any] = {}
    outp = Path(out)
    previous = outp / "rag.json"
    if previous.exists():  # sections not run this time keep their last figures
        results = json.loads(previous.read_text())
    questions = load_questions()
    if "retrieval" in sections:
        results["retrieval"] = await retrieval(settings, sizes)
        results["embed"] = results["retrieval"].pop("embed")
    if "recall" in sections:
        results["recall"] = await recall(settings, questions)
    if "turns" in sections:
        results["turns"] = await turn_latency(settings, questions, turns)
    if "grounded" in sections:
        from parley.bench.grounded import run_grounded_bench

        results["grounded"] = await run_grounded_bench(settings, models=models, out=out)
    report(results, outp)
    return 0
