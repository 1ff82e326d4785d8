"""The relay's ``ContextProvider`` over a knowledge store: embed the query, hybrid search, keep the best few
passages whose similarity clears the floor.

The floor is the decision "the knowledge base has nothing on this", made in code from the cosine similarity of
query and passage (absolute), rather than hoped for from a small model. Below it the relay injects nothing and
tells the answer to decline (``parley.relay.context.DECLINE``), unless the message is small talk.
"""

from __future__ import annotations

import asyncio
import logging
import time

from parley.rag.types import Embedder, KnowledgeStore
from parley.relay.context import Context, Passage
from parley.settings import Settings

logger = logging.getLogger(__name__)

CANDIDATES = 8  # hits fetched before the floor and top-k are applied


class Retriever:
    def __init__(
        self,
        store: KnowledgeStore,
        embedder: Embedder,
        *,
        top_k: int = 2,
        min_similarity: float = 0.35,
        alpha: float = 0.5,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.top_k = top_k
        self.min_similarity = min_similarity
        self.alpha = alpha
        self._lock = asyncio.Lock()  # one embedding at a time: two would only fight for the same cores

    async def retrieve(self, query: str, *, session_id: str, kb: str) -> Context:
        started = time.monotonic()
        async with self._lock:
            vectors = await asyncio.to_thread(self.embedder.embed_queries, [query])
        embedded = time.monotonic()
        hits = await self.store.search(kb, query, vectors[0], k=max(CANDIDATES, self.top_k), alpha=self.alpha)
        best = max((h.similarity for h in hits), default=None)
        kept = [h for h in hits if h.similarity >= self.min_similarity][: self.top_k]
        logger.debug(
            "retrieved %d/%d passages for %r in kb %s (embed %.1f ms, search %.1f ms, best %.3f)",
            len(kept),
            len(hits),
            query,
            kb,
            (embedded - started) * 1000,
            (time.monotonic() - embedded) * 1000,
            best if best is not None else float("nan"),
        )
        passages = [
            Passage(
                text=h.chunk.text,
                source=h.chunk.source,
                score=h.similarity,
                title=h.chunk.title,
                headings=h.chunk.heading_path,
                chunk_id=h.chunk.id,
            )
            for h in kept
        ]
        return Context(passages=passages, searched=True, best_score=best)

    async def ready(self) -> bool:
        return await self.store.ready()

    async def aclose(self) -> None:
        await self.store.aclose()


async def open_retriever(settings: Settings) -> Retriever:
    """The store and embedder the settings name, the embedder loaded and warmed (the first turn must not pay
    for loading it)."""
    from parley.rag.stores import make_embedder, make_store

    embedder = make_embedder(settings)
    store = make_store(settings)
    started = time.monotonic()
    vectors = await asyncio.to_thread(embedder.embed_queries, ["warm up"])
    try:  # and the default knowledge base's vectors, so the first turn pays for neither
        await store.search(settings.kb_default, "warm up", vectors[0], k=1)
    except Exception as exc:  # a store that is down now may be up by the first turn; /readyz tells
        logger.warning("knowledge store not answering at start-up: %s", exc)
    logger.info("embedder %s ready in %.0f ms", embedder.name, (time.monotonic() - started) * 1000)
    return Retriever(
        store,
        embedder,
        top_k=settings.rag_top_k,
        min_similarity=settings.rag_min_similarity,
        alpha=settings.rag_alpha,
    )
