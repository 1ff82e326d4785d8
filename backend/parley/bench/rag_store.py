"""Retrieval speed of a knowledge store: hybrid search over a generated corpus at several sizes.

The corpus: random unit vectors, and text drawn from a Zipf-distributed vocabulary of made-up words (a few common
ones included), ~80 words a chunk, so BM25 has realistic postings to score. Queries are 3-7 words of the same
vocabulary with a vector near one of the stored ones. Only the search is timed (the query vector is given);
query embedding is timed apart when an embedder is passed.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from parley.bench.report import summary
from parley.rag.types import Chunk, Document, Embedder, KnowledgeStore, Matrix

logger = logging.getLogger(__name__)

CHUNKS_PER_DOCUMENT = 100
WORDS_PER_CHUNK = 80
VOCABULARY = 20_000
COMMON = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "for",
    "on",
    "with",
    "that",
    "by",
    "as",
    "are",
    "from",
    "it",
    "at",
    "be",
    "this",
    "or",
    "an",
    "was",
    "which",
    "can",
]
SYLLABLES = [
    "ka",
    "to",
    "ri",
    "me",
    "su",
    "lo",
    "na",
    "pe",
    "vi",
    "da",
    "ro",
    "mi",
    "sa",
    "te",
    "nu",
    "bo",
    "ga",
    "li",
    "fe",
    "zu",
]


def _vocabulary(rng: np.random.Generator, size: int) -> list[str]:
    words = list(COMMON)
    seen = set(words)
    syllables = np.asarray(SYLLABLES)
    while len(words) < size:  # made-up words of 2-4 syllables, drawn in bulk
        parts = syllables[rng.integers(len(SYLLABLES), size=(size, 4))]
        lengths = rng.integers(2, 5, size=size)
        for row, n in zip(parts, lengths, strict=True):
            word = "".join(row[:n])
            if word not in seen and len(words) < size:
                seen.add(word)
                words.append(word)
    return words


def _zipf(size: int) -> np.ndarray:
    weights = 1.0 / np.arange(1, size + 1) ** 1.07
    return weights / weights.sum()


def _unit(rng: np.random.Generator, n: int, dim: int) -> Matrix:
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def generate_corpus(n: int, dim: int, *, seed: int = 0) -> tuple[list[tuple[Document, Matrix]], list[str]]:
    """``n`` chunks in documents of ``CHUNKS_PER_DOCUMENT``, with vectors; and the vocabulary."""
    rng = np.random.default_rng(seed)
    vocab = _vocabulary(rng, VOCABULARY)
    picks = rng.choice(len(vocab), size=(n, WORDS_PER_CHUNK), p=_zipf(len(vocab)))
    texts = [" ".join(row) for row in np.asarray(vocab, dtype=object)[picks].tolist()]
    vectors = _unit(rng, n, dim)
    items = []
    for start in range(0, n, CHUNKS_PER_DOCUMENT):
        source = f"bench/doc-{start // CHUNKS_PER_DOCUMENT:05d}.md"
        chunks = tuple(
            Chunk(
                id=f"{source}#{i}",
                source=source,
                title=f"Document {start // CHUNKS_PER_DOCUMENT}",
                headings=(f"Section {i % 7}",),
                text=texts[start + i],
                ordinal=i,
            )
            for i in range(min(CHUNKS_PER_DOCUMENT, n - start))
        )
        end = start + len(chunks)
        items.append((Document(source, chunks[0].title, f"digest-{start}", chunks), vectors[start:end]))
    return items, vocab


def _queries(
    rng: np.random.Generator, vocab: list[str], stored: Matrix, count: int
) -> list[tuple[str, np.ndarray]]:
    probs = _zipf(len(vocab))
    out = []
    for _ in range(count):
        picks = rng.choice(len(vocab), size=int(rng.integers(3, 8)), p=probs)
        near = stored[int(rng.integers(len(stored)))] + 0.5 * _unit(rng, 1, stored.shape[1])[0]
        out.append((" ".join(vocab[i] for i in picks), (near / np.linalg.norm(near)).astype(np.float32)))
    return out


async def _fill(store: KnowledgeStore, kb: str, items: Sequence[tuple[Document, Matrix]]) -> None:
    bulk = getattr(store, "upsert_many", None)
    if bulk is not None:  # the embedded store: one transaction
        await bulk(kb, items)
        return
    for document, vectors in items:
        await store.upsert(kb, document, vectors)


async def retrieval_latency(
    store_factory: Callable[[], KnowledgeStore] | None = None,
    embedder_dim: int = 384,
    sizes: Sequence[int] = (1000, 10000, 100000),
    queries: int = 200,
    *,
    k: int = 8,
    alpha: float = 0.5,
    embedder: Embedder | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Hybrid search latency per corpus size: ``{"sizes": {"1000": {"p50": ms, "p95": ms, ..., "fill_s",
    "first_search_ms"}}, "embed": {...}}``. ``store_factory`` gives a store for ``embedder_dim``-dim vectors (each
    size fills a knowledge base of its own); default: an embedded store in a temporary directory."""
    results: dict[str, Any] = {"dim": embedder_dim, "k": k, "alpha": alpha, "queries": queries, "sizes": {}}
    with contextlib.ExitStack() as stack:
        if store_factory is None:
            from parley.rag.embedded import EmbeddedStore

            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="parley-bench-"))

            def store_factory() -> KnowledgeStore:
                return EmbeddedStore(folder, "bench-random", embedder_dim)

        for size in sizes:
            results["sizes"][str(size)] = await _one_size(
                store_factory, embedder_dim, size, queries, k, alpha, seed
            )
    if embedder is not None:
        results["embed"] = _embed_latency(embedder, queries)
    return results


async def _one_size(
    store_factory: Callable[[], KnowledgeStore],
    dim: int,
    size: int,
    queries: int,
    k: int,
    alpha: float,
    seed: int,
) -> dict[str, float]:
    items, vocab = generate_corpus(size, dim, seed=seed)
    stored = np.concatenate([v for _, v in items])
    asked = _queries(np.random.default_rng(seed + 1), vocab, stored, queries)
    kb = f"bench-{size}-{secrets.token_hex(3)}"
    store = store_factory()
    try:
        started = time.perf_counter()
        await _fill(store, kb, items)
        filled = time.perf_counter() - started
        del items, stored
        started = time.perf_counter()
        await store.search(kb, asked[0][0], asked[0][1], k=k, alpha=alpha)  # loads the vectors: timed apart
        first = (time.perf_counter() - started) * 1000.0
        times = []
        for text, vector in asked:
            started = time.perf_counter()
            hits = await store.search(kb, text, vector, k=k, alpha=alpha)
            times.append((time.perf_counter() - started) * 1000.0)
            if not hits:
                raise RuntimeError(f"no hits for {text!r} in {kb}")
    finally:
        await store.aclose()
    stats = summary(times)
    logger.info(
        "retrieval at %d chunks: p50 %.2f ms, p95 %.2f ms (fill %.1f s)",
        size,
        stats["p50"],
        stats["p95"],
        filled,
    )
    return {**stats, "fill_s": filled, "first_search_ms": first}


def _embed_latency(embedder: Embedder, runs: int) -> dict[str, float]:
    embedder.embed_queries(["warm up"])
    times = []
    for i in range(runs):
        started = time.perf_counter()
        embedder.embed_queries([f"how long do duck eggs take to hatch, question {i}"])
        times.append((time.perf_counter() - started) * 1000.0)
    return summary(times)
