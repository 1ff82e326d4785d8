"""The knowledge store and embedder the settings name: Weaviate when ``weaviate_url`` is set, else the embedded
store under ``kb_path()``; the embedder by ``settings.embedder``."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from parley.rag.embedder import load_embedder
from parley.rag.types import Embedder, KnowledgeStore

if TYPE_CHECKING:
    from parley.settings import Settings

_embedders: dict[str, Embedder] = {}
_embedders_lock = threading.Lock()


def make_embedder(settings: Settings) -> Embedder:
    """The embedder named by the settings; one per process and name, so its model loads once (on first use)."""
    with _embedders_lock:
        embedder = _embedders.get(settings.embedder)
        if embedder is None:
            embedder = _embedders[settings.embedder] = load_embedder(settings.embedder)
        return embedder


def make_store(settings: Settings, embedder: Embedder | None = None) -> KnowledgeStore:
    """The store for vectors of ``embedder`` (default: the settings' one; only its name and dim are used, no
    model is loaded)."""
    embedder = embedder or make_embedder(settings)
    if settings.weaviate_url:
        from parley.rag.weaviate_store import WeaviateStore

        return WeaviateStore.from_settings(settings, embedder_name=embedder.name, dim=embedder.dim)
    from parley.rag.embedded import EmbeddedStore

    return EmbeddedStore(settings.kb_path(), embedder_name=embedder.name, dim=embedder.dim)
