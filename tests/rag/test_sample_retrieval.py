"""The sample knowledge base against its question set (rag/questions.json), with the real embedder (MiniLM in
numpy) and the store the settings name (the embedded store in a temporary directory): every answerable question
finds its document among the top 3 hybrid hits. Recall at 1/3/5 for hybrid, vector-only and keywords-only search
is logged (and recorded as test properties)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from parley.rag.ingest import ingest, sample_paths, samples_dir
from parley.rag.types import Embedder, KnowledgeStore, Vector

pytestmark = pytest.mark.models

logger = logging.getLogger(__name__)

QUESTIONS = Path(__file__).resolve().parents[2] / "rag" / "questions.json"
KB = "samples"
ALPHAS = {"hybrid": 0.5, "vector": 1.0, "keywords": 0.0}


@dataclass
class Loaded:
    store: KnowledgeStore
    embedder: Embedder
    vectors: dict[str, Vector]  # every question's query vector, embedded once in a batch


def _questions() -> list[dict[str, Any]]:
    questions: list[dict[str, Any]] = json.loads(QUESTIONS.read_text())["questions"]
    return questions


def _query(q: dict[str, Any]) -> str:
    return f"{q['previous']} {q['question']}" if q.get("previous") else str(q["question"])


def _acceptable(q: dict[str, Any]) -> set[str]:
    return {q["expected_source"], *q.get("also_in", [])}


@pytest.fixture(scope="module")
async def loaded(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Loaded]:
    from parley.rag.stores import make_embedder, make_store
    from parley.settings import Settings

    settings = Settings(kb_dir=str(tmp_path_factory.mktemp("kb")), weaviate_url="", embedder="minilm")
    try:
        embedder = make_embedder(settings)
        embedder.embed_queries(["warm up"])
    except Exception as exc:  # the weights package is missing
        pytest.skip(f"embedder unavailable: {exc}")
    store = make_store(settings, embedder)
    folder = samples_dir()
    assert folder is not None
    english = sample_paths(folder)  # the question set is about the English documents
    report = await ingest(english, kb=KB, store=store, embedder=embedder, progress=False)
    assert report.skipped == [] and len(report.added) == len(english)
    queries = [_query(q) for q in _questions()]
    yield Loaded(store, embedder, dict(zip(queries, embedder.embed_queries(queries), strict=True)))
    await store.aclose()


async def _sources(loaded: Loaded, query: str, alpha: float, k: int = 5) -> list[str]:
    hits = await loaded.store.search(KB, query, loaded.vectors[query], k=k, alpha=alpha)
    return [Path(h.chunk.source).name for h in hits]


def test_the_question_set_is_well_formed() -> None:
    questions = _questions()
    folder = samples_dir()
    assert folder is not None
    names = {p.name for p in folder.iterdir()}
    kinds = {"fact", "paraphrase", "follow_up", "unanswerable"}
    for q in questions:
        assert q["kind"] in kinds
        assert (q["expected_source"] is None) == (q["kind"] == "unanswerable")
        assert _acceptable(q) - {None} <= names
        assert ("previous" in q) == (q["kind"] == "follow_up")
        assert q["answer_contains"] or q["kind"] == "unanswerable"
    assert sum(q["kind"] == "unanswerable" for q in questions) >= 5


@pytest.mark.parametrize(
    "question", [q for q in _questions() if q["expected_source"]], ids=lambda q: str(q["question"])[:40]
)
async def test_each_answerable_question_finds_its_document_in_the_top_3(
    loaded: Loaded, question: dict[str, Any]
) -> None:
    found = await _sources(loaded, _query(question), ALPHAS["hybrid"], k=3)
    assert _acceptable(question) & set(found), f"{_query(question)!r}: top 3 were {found}"


async def test_recall_by_search_mode(loaded: Loaded, record_property: Callable[[str, object], None]) -> None:
    answerable = [q for q in _questions() if q["expected_source"]]
    recall: dict[str, dict[int, float]] = {}
    for mode, alpha in ALPHAS.items():
        ranks = []
        for q in answerable:
            found = await _sources(loaded, _query(q), alpha, k=5)
            ranks.append(next((i + 1 for i, s in enumerate(found) if s in _acceptable(q)), None))
        recall[mode] = {k: sum(r is not None and r <= k for r in ranks) / len(ranks) for k in (1, 3, 5)}
        record_property(f"recall_{mode}", recall[mode])
        logger.info("recall %s (alpha %.1f): %s", mode, alpha, recall[mode])
    unanswerable = [q for q in _questions() if not q["expected_source"]]
    best = []
    for q in unanswerable:
        hits = await loaded.store.search(
            KB, _query(q), loaded.vectors[_query(q)], k=1, alpha=ALPHAS["hybrid"]
        )
        best.append(max((h.similarity for h in hits), default=0.0))
    record_property("unanswerable_best_similarity", best)
    logger.info("best similarity of the unanswerable questions: %s", [round(b, 3) for b in best])
    assert recall["hybrid"][3] == 1.0
    assert recall["hybrid"][1] >= 0.75
