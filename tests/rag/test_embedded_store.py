"""The embedded store beyond the shared contract: query sanitising, fusion, the in-memory index kept in step with
writes from other connections and processes, and its file handling."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

import parley.rag.embedded as embedded
from parley.rag.embedded import EmbeddedStore, fts_query, query_terms, relative_score_fusion

from .conftest import HashEmbedder, make_document

KB = "unit"
EMB = HashEmbedder()


def store_at(path: Path) -> EmbeddedStore:
    return EmbeddedStore(path, EMB.name, EMB.dim)


async def put(store: EmbeddedStore, source: str, texts: list[str], kb: str = KB) -> None:
    await store.upsert(kb, make_document(source, texts), EMB.embed_passages(texts))


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def q(text: str) -> np.ndarray:
    return EMB.embed_queries([text])[0]


# --- pure pieces -----------------------------------------------------------------------------------------------


def test_query_terms_drop_stop_words_and_repeats() -> None:
    assert query_terms("How long do the Duck eggs take, duck?") == ["long", "duck", "eggs", "take"]
    assert query_terms("what is it") == ["what", "is", "it"]  # nothing but stop words: kept
    assert query_terms('"AND OR NOT * ( ) : ^ -') == ["not"]  # and, or: stop words
    assert query_terms("  ** ") == []
    assert len(query_terms(" ".join(f"w{i}" for i in range(100)))) == embedded.MAX_QUERY_TERMS


def test_fts_query_quotes_every_term() -> None:
    assert fts_query(["near", "title"]) == '"near" OR "title"'
    assert fts_query([]) is None


def test_relative_score_fusion() -> None:
    vec = {1: 0.9, 2: 0.5, 3: 0.1}
    kw = {3: 12.0, 4: 2.0}
    assert relative_score_fusion(vec, kw, 1.0) == [(1, 1.0), (2, 0.5), (3, 0.0)]
    assert relative_score_fusion(vec, kw, 0.0) == [(3, 1.0), (4, 0.0)]
    fused = dict(relative_score_fusion(vec, kw, 0.5))
    assert fused == pytest.approx({1: 0.5, 2: 0.25, 3: 0.5, 4: 0.0})
    assert [k for k, _ in relative_score_fusion(vec, kw, 0.5)] == [1, 3, 2, 4]  # ties by key
    assert relative_score_fusion({7: 0.3}, {}, 0.5) == [(7, 0.5)]  # a lone candidate is a full match
    assert relative_score_fusion({}, {}, 0.5) == []


# --- the index kept in step ------------------------------------------------------------------------------------


async def test_reader_follows_many_writes_incrementally(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader, writer = store_at(tmp_path), store_at(tmp_path)
    await put(writer, "a.md", ["alpha one", "alpha two"])
    assert len(await reader.search(KB, "alpha", q("alpha"), k=10)) == 2
    index = reader._file(KB).index
    for i in range(30):  # replaced again and again: the removed rows are found through the log
        await put(writer, "a.md", [f"alpha version {i}", "alpha two"])
        hits = await reader.search(KB, "alpha", q("alpha"), k=10)
        assert sorted(h.chunk.text for h in hits) == sorted([f"alpha version {i}", "alpha two"])
    assert index.size - index.dead == 2
    assert index.dead == 60  # not yet worth compacting

    monkeypatch.setattr(embedded, "REMOVED_LOG_KEEP", 3)
    for i in range(5):  # the log keeps 3 generations: the reader, 5 behind, reloads everything
        await put(writer, "a.md", [f"beta {i}"])
    hits = await reader.search(KB, "beta", q("beta 4"), k=10)
    assert [h.chunk.text for h in hits] == ["beta 4"]
    assert (index.size, index.dead) == (1, 0)
    await reader.aclose()
    await writer.aclose()


async def test_compaction_keeps_results(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    texts = [f"chunk number {i} of the gamma file" for i in range(3000)]
    await put(store, "gamma.md", texts)
    await put(store, "keep.md", ["delta stays"])
    assert len(await store.search(KB, "delta", q("delta"), k=1)) == 1
    await store.delete(KB, "gamma.md")
    hits = await store.search(KB, "delta stays", q("delta stays"), k=5)
    assert [h.chunk.text for h in hits] == ["delta stays"]
    index = store._file(KB).index
    assert (index.size, index.dead) == (1, 0)  # 3000 of 3001 dead: compacted
    await store.aclose()


async def test_a_write_from_another_process_is_searchable_at_once(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    await put(store, "local.md", ["written here"])
    assert await store.search(KB, "written", q("written"), k=3)  # the index is loaded
    vector = EMB.embed_passages(["written by another process"])[0].tolist()
    script = f"""
import asyncio, numpy as np
from parley.rag.embedded import EmbeddedStore
from parley.rag.types import Chunk, Document
doc = Document("other.md", "Other", "d1", (Chunk("c1", "other.md", "Other", (), "written by another process", 0),))
store = EmbeddedStore({str(tmp_path)!r}, {EMB.name!r}, {EMB.dim})
asyncio.run(store.upsert({KB!r}, doc, np.array([{json.dumps(vector)}], dtype=np.float32)))
"""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "backend")}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script, env=env)
    assert await proc.wait() == 0
    hits = await store.search(KB, "another process", q("written by another process"), k=1)
    assert [h.chunk.source for h in hits] == ["other.md"]
    await store.aclose()


async def test_concurrent_searches_during_writes(tmp_path: Path) -> None:
    reader, writer = store_at(tmp_path), store_at(tmp_path)
    await put(writer, "base.md", ["steady text"])

    async def write() -> None:
        for i in range(20):
            await put(writer, f"doc{i % 4}.md", [f"moving text {i}", "more moving text"])

    async def search() -> None:
        for _ in range(40):
            hits = await reader.search(KB, "steady text", q("steady text"), k=3)
            assert hits[0].chunk.text == "steady text"

    await asyncio.gather(write(), search(), search())
    assert {d.source for d in await reader.documents(KB)} == {"base.md", *(f"doc{i}.md" for i in range(4))}
    await reader.aclose()
    await writer.aclose()


async def test_common_terms_are_left_out_in_large_kbs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embedded, "COMMON_TERM_MIN_ROWS", 10)
    store = store_at(tmp_path)
    await put(store, "eggs.md", [f"eggs note {i}" for i in range(40)] + ["eggs of the muscovy duck"])
    kb_file = store._file(KB)
    await store.search(KB, "x", q("x"), k=1)
    conn = kb_file._read()
    assert conn is not None
    assert kb_file._selective_terms(conn, ["eggs", "muscovy", "zebra"]) == ["muscovy"]
    assert kb_file._selective_terms(conn, ["eggs", "note"]) == ["note"]  # all common: the rarest stays
    hits = await store.search(KB, "muscovy eggs", q("zzz"), k=3, alpha=0.0)
    assert hits[0].chunk.text == "eggs of the muscovy duck"
    await store.aclose()


# --- files -----------------------------------------------------------------------------------------------------


async def test_reads_create_no_files(tmp_path: Path) -> None:
    store = store_at(tmp_path / "kb")
    assert await store.search("ghost", "x", q("x"), k=3) == []
    assert await store.documents("ghost") == []
    assert await store.delete("ghost", "a.md") == 0
    assert await store.knowledge_bases() == []
    assert not (tmp_path / "kb").exists()
    assert await store.ready()
    await put(store, "a.md", ["hello"], kb="real")
    assert [n for n in names(tmp_path / "kb") if n.endswith(".sqlite")] == ["real.sqlite"]
    await store.aclose()


async def test_invalid_kb_names_are_refused_on_write(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    for kb in ("../up", "a/b", "", "-x", "a" * 65):
        with pytest.raises(ValueError, match="knowledge base name"):
            await put(store, "a.md", ["x"], kb=kb)
    assert names(tmp_path) == []


async def test_similarity_of_stored_vectors_that_are_not_unit(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    doc = make_document("s.md", ["scaled"])
    vector = np.full((1, EMB.dim), 0.5, dtype=np.float32)
    await store.upsert(KB, doc, vector)
    query = np.zeros(EMB.dim, dtype=np.float32)
    query[:2] = (3.0, 4.0)
    (hit,) = await store.search(KB, "scaled", query, k=1)
    assert hit.similarity == pytest.approx(
        float(vector[0] @ query / (np.linalg.norm(vector) * 5.0)), abs=1e-6
    )
    with pytest.raises(ValueError, match="finite"):
        await store.upsert(KB, doc, np.full((1, EMB.dim), np.nan, dtype=np.float32))
    with pytest.raises(ValueError, match="query vector"):
        await store.search(KB, "x", np.zeros(3, dtype=np.float32), k=1)
    await store.aclose()
