"""The knowledge store's interface and value types. Every store implements ``KnowledgeStore``; one contract test
suite (tests/rag/test_store_contract.py) runs over each.

A knowledge base (``kb``) is a named, isolated collection: an embedded collection or a Weaviate tenant. A document is
identified by its ``source`` (the path or URL as ingested) inside a knowledge base; upserting a document replaces
all of its chunks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]  # one unit vector, shape (dim,)
Matrix = npt.NDArray[np.float32]  # unit vectors, shape (n, dim)

KB_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"


@dataclass(frozen=True, slots=True)
class Chunk:
    """One passage of a document, as stored. ``id`` is stable: the same document text gives the same ids."""

    id: str
    source: str
    title: str
    headings: tuple[str, ...]  # heading path inside the document, outermost first
    text: str
    ordinal: int  # position in the document

    @property
    def heading_path(self) -> str:
        return " > ".join(self.headings)


@dataclass(frozen=True, slots=True)
class Document:
    """A document ready to store: its chunks (in order), their vectors (rows match), and a digest of its
    content, so ingest can skip an unchanged file."""

    source: str
    title: str
    digest: str
    chunks: tuple[Chunk, ...]


@dataclass(frozen=True, slots=True)
class DocumentInfo:
    source: str
    title: str
    digest: str
    chunks: int


@dataclass(frozen=True, slots=True)
class Hit:
    """A search result. ``score`` ranks (fused hybrid score, higher is better, comparable only within one query);
    ``similarity`` is the cosine similarity of the chunk to the query vector (absolute: the relay's floor)."""

    chunk: Chunk
    score: float
    similarity: float


@runtime_checkable
class KnowledgeStore(Protocol):
    async def upsert(self, kb: str, document: Document, vectors: Matrix) -> None:
        """Store ``document`` in ``kb``, replacing whatever chunks it had. Searchable once this returns."""
        ...

    async def delete(self, kb: str, source: str) -> int:
        """Remove a document; returns how many chunks went."""
        ...

    async def documents(self, kb: str) -> list[DocumentInfo]:
        """The documents of ``kb``, sorted by source."""
        ...

    async def search(self, kb: str, query: str, vector: Vector, *, k: int, alpha: float = 0.5) -> list[Hit]:
        """Hybrid search: keywords (BM25) and vector, fused with weight ``alpha`` on the vector side (1 = vector
        only, 0 = keywords only). Best first, at most ``k``. An unknown ``kb`` gives no hits."""
        ...

    async def knowledge_bases(self) -> list[str]: ...

    async def ready(self) -> bool:
        """True when the store answers (for ``/readyz``)."""
        ...

    async def aclose(self) -> None: ...


class Embedder(Protocol):
    name: str  # stored with a knowledge base: vectors of one embedder are never searched with another's
    dim: int

    def embed_queries(self, texts: list[str]) -> Matrix:
        """Unit vectors for search queries (blocking; callers run it in a thread when on an event loop)."""
        ...

    def embed_passages(self, texts: list[str]) -> Matrix:
        """Unit vectors for passages to store (models such as e5 embed the two sides differently)."""
        ...
