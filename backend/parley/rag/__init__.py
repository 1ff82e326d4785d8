"""The knowledge base: documents chunked, embedded and stored; hybrid search for the relay's context hook.

- ``types``: the one store interface (``KnowledgeStore``) and its value types.
- ``embedded``: the default store (SQLite FTS5 + a numpy matrix of vectors, on disk under ``PARLEY_KB_DIR``).
- ``weaviate_store``: the production store (Weaviate, one tenant per knowledge base).
- ``embedder``: text -> unit vectors, in-process and offline.
- ``loaders`` / ``chunking`` / ``ingest``: files -> documents -> chunks -> the store (``parley ingest``).
- ``retriever``: the relay's ``ContextProvider`` over a store.
"""
