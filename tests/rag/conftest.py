"""Knowledge-store fixtures: a fast deterministic embedder and every store implementation on one contract.

``store_kit`` is parametrised over the implementations: ``embedded`` always, ``weaviate`` when
``PARLEY_WEAVIATE_URL`` points at a server (each test gets collections of its own, dropped afterwards).
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from parley.rag.types import Chunk, Document, KnowledgeStore, Matrix

_WORD = re.compile(r"\w+")


class HashEmbedder:
    """Bag of words hashed into ``dim`` signed buckets, L2-normalised: texts sharing words are close."""

    def __init__(self, name: str = "test-hash-64", dim: int = 64) -> None:
        self.name = name
        self.dim = dim

    def _embed(self, texts: list[str]) -> Matrix:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in _WORD.findall(text.lower()):
                digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
                bucket = int.from_bytes(digest[:4], "little") % self.dim
                out[row, bucket] += 1.0 if digest[4] & 1 else -1.0
            norm = float(np.linalg.norm(out[row]))
            if norm == 0.0:
                out[row, 0] = 1.0
            else:
                out[row] /= norm
        return out

    def embed_queries(self, texts: list[str]) -> Matrix:
        return self._embed(texts)

    def embed_passages(self, texts: list[str]) -> Matrix:
        return self._embed(texts)


def make_document(
    source: str,
    texts: Sequence[str],
    *,
    title: str = "",
    headings: tuple[str, ...] = (),
    digest: str | None = None,
) -> Document:
    title = title or Path(source).stem
    chunks = tuple(
        Chunk(
            id=hashlib.sha256(f"{source}\x1f{i}\x1f{text}".encode()).hexdigest()[:32],
            source=source,
            title=title,
            headings=headings,
            text=text,
            ordinal=i,
        )
        for i, text in enumerate(texts)
    )
    digest = digest or hashlib.sha256("\x1e".join(texts).encode()).hexdigest()
    return Document(source=source, title=title, digest=digest, chunks=chunks)


@dataclass
class StoreKit:
    """One implementation: ``open()`` gives a new store instance on the same data (as another process would)."""

    kind: str
    factory: Callable[[str, int], KnowledgeStore]
    embedder: HashEmbedder = field(default_factory=HashEmbedder)
    opened: list[KnowledgeStore] = field(default_factory=list)

    def open(self, embedder_name: str | None = None, dim: int | None = None) -> KnowledgeStore:
        store = self.factory(embedder_name or self.embedder.name, dim or self.embedder.dim)
        self.opened.append(store)
        return store

    async def put(self, store: KnowledgeStore, kb: str, document: Document) -> None:
        vectors = self.embedder.embed_passages([c.text for c in document.chunks])
        await store.upsert(kb, document, vectors)

    def query(self, text: str) -> np.ndarray:
        return self.embedder.embed_queries([text])[0]


def _weaviate_factory() -> tuple[Callable[[str, int], KnowledgeStore], str]:
    from parley.rag.weaviate_store import WeaviateStore, connection_params

    url = os.environ["PARLEY_WEAVIATE_URL"]
    params = connection_params(url, int(os.environ.get("PARLEY_WEAVIATE_GRPC_PORT", "50051")))
    collection = f"ParleyTest{uuid.uuid4().hex[:10]}"
    api_key = os.environ.get("PARLEY_WEAVIATE_API_KEY", "")

    def factory(name: str, dim: int) -> KnowledgeStore:
        return WeaviateStore(params, collection=collection, embedder_name=name, dim=dim, api_key=api_key)

    return factory, collection


@pytest.fixture(params=["embedded", "weaviate"])
async def store_kit(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreKit]:
    if request.param == "embedded":
        from parley.rag.embedded import EmbeddedStore

        kit = StoreKit("embedded", lambda name, dim: EmbeddedStore(tmp_path / "kb", name, dim))
        yield kit
    else:
        if not os.environ.get("PARLEY_WEAVIATE_URL"):
            pytest.skip(
                "no Weaviate server: set PARLEY_WEAVIATE_URL (docker compose up weaviate) to run this leg"
            )
        factory, _ = _weaviate_factory()
        kit = StoreKit("weaviate", factory)
        yield kit
        from parley.rag.weaviate_store import WeaviateStore

        cleaner = kit.open()
        assert isinstance(cleaner, WeaviateStore)
        await cleaner.drop_collections()
    for store in kit.opened:
        await store.aclose()


@pytest.fixture
async def store(store_kit: StoreKit) -> KnowledgeStore:
    return store_kit.open()
