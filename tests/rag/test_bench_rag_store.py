"""The retrieval speed helper of ``parley bench rag`` on a small corpus."""

from __future__ import annotations

from pathlib import Path

from parley.bench.rag_store import generate_corpus, retrieval_latency
from parley.rag.embedded import EmbeddedStore

from .conftest import HashEmbedder


def test_generated_corpus() -> None:
    items, vocab = generate_corpus(250, 16, seed=3)
    assert [len(doc.chunks) for doc, _ in items] == [100, 100, 50]
    assert all(vectors.shape == (len(doc.chunks), 16) for doc, vectors in items)
    assert len({c.id for doc, _ in items for c in doc.chunks}) == 250
    assert len(vocab) > 1000
    again, _ = generate_corpus(250, 16, seed=3)
    assert again[0][0] == items[0][0]


async def test_retrieval_latency_small(tmp_path: Path) -> None:
    result = await retrieval_latency(sizes=(200,), queries=20, embedder=HashEmbedder())
    stats = result["sizes"]["200"]
    assert stats["n"] == 20
    assert 0 < stats["p50"] <= stats["p95"]
    assert stats["fill_s"] > 0 and stats["first_search_ms"] > 0
    assert result["embed"]["n"] == 20

    opened: list[EmbeddedStore] = []

    def factory() -> EmbeddedStore:
        opened.append(EmbeddedStore(tmp_path, "bench", 32))
        return opened[-1]

    result = await retrieval_latency(factory, 32, sizes=(150, 120), queries=5)
    assert list(result["sizes"]) == ["150", "120"] and len(opened) == 2
    assert len(await opened[0].knowledge_bases()) == 2  # one fresh knowledge base per size
