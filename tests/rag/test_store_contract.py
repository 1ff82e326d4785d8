"""The ``KnowledgeStore`` contract, run over every implementation (``store_kit`` in conftest.py): embedded always,
Weaviate when ``PARLEY_WEAVIATE_URL`` is set."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parley.rag.embedder import EmbedderMismatchError
from parley.rag.types import KnowledgeStore

from .conftest import StoreKit, make_document

KB = "contract"

HENS = make_document(
    "docs/hens.md",
    [
        "Chicken eggs hatch after twenty one days in the incubator.",
        "Turn the eggs three times a day until lockdown.",
        "Keep the brooder warm for the first week of the chicks.",
    ],
    title="Hens",
    headings=("Incubation", "Chickens"),
)
DUCKS = make_document(
    "docs/ducks.md",
    [
        "Muscovy duck eggs need thirty five days to hatch.",
        "Ducklings love water but must not get chilled.",
    ],
    title="Ducks",
)


async def put_all(kit: StoreKit, store: KnowledgeStore, kb: str = KB) -> None:
    await kit.put(store, kb, HENS)
    await kit.put(store, kb, DUCKS)


def texts(hits: list) -> list[str]:
    return [h.chunk.text for h in hits]


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0], ids=["keywords", "hybrid", "vector"])
async def test_upsert_then_search_finds_it(store_kit: StoreKit, store: KnowledgeStore, alpha: float) -> None:
    await put_all(store_kit, store)
    query = "muscovy duck hatch days"
    hits = await store.search(KB, query, store_kit.query(query), k=3, alpha=alpha)
    assert hits, "no hits"
    assert hits[0].chunk.text == DUCKS.chunks[0].text
    assert hits[0].chunk == DUCKS.chunks[0]
    assert len(hits) <= 3
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


async def test_keywords_alone_ignore_the_vector(store_kit: StoreKit, store: KnowledgeStore) -> None:
    await put_all(store_kit, store)
    unrelated = store_kit.query("brooder warm chicks week")  # the vector points elsewhere
    hits = await store.search(KB, "ducklings chilled", unrelated, k=2, alpha=0.0)
    assert texts(hits)[:1] == [DUCKS.chunks[1].text]


async def test_vector_alone_ignores_the_words(store_kit: StoreKit, store: KnowledgeStore) -> None:
    await put_all(store_kit, store)
    hits = await store.search(
        KB, "ducklings chilled", store_kit.query("brooder warm chicks week"), k=2, alpha=1.0
    )
    assert texts(hits)[:1] == [HENS.chunks[2].text]


async def test_headings_and_title_are_searchable(store_kit: StoreKit, store: KnowledgeStore) -> None:
    await put_all(store_kit, store)
    hits = await store.search(KB, "incubation", store_kit.query("zzz"), k=5, alpha=0.0)
    assert {h.chunk.source for h in hits} == {HENS.source}
    assert hits[0].chunk.headings == ("Incubation", "Chickens")
    assert hits[0].chunk.heading_path == "Incubation > Chickens"


async def test_reupsert_is_idempotent(store_kit: StoreKit, store: KnowledgeStore) -> None:
    await put_all(store_kit, store)
    await store_kit.put(store, KB, HENS)
    await store_kit.put(store, KB, HENS)
    hits = await store.search(KB, "eggs", store_kit.query("eggs"), k=20, alpha=0.5)
    ids = [h.chunk.id for h in hits]
    assert len(ids) == len(set(ids)) == len(HENS.chunks) + len(DUCKS.chunks)
    assert {c.id for c in HENS.chunks} <= set(ids)
    docs = {d.source: d for d in await store.documents(KB)}
    assert docs[HENS.source].chunks == len(HENS.chunks)


async def test_changed_document_replaces_its_chunks(store_kit: StoreKit, store: KnowledgeStore) -> None:
    await put_all(store_kit, store)
    changed = make_document(HENS.source, ["Goose eggs take about thirty days."], title="Geese")
    await store_kit.put(store, KB, changed)
    old = await store.search(KB, "brooder lockdown", store_kit.query("brooder lockdown"), k=10, alpha=0.0)
    assert not [h for h in old if h.chunk.source == HENS.source]
    new = await store.search(KB, "goose", store_kit.query("goose"), k=10, alpha=0.5)
    assert texts(new)[0] == "Goose eggs take about thirty days."
    everything = await store.search(KB, "eggs", store_kit.query("eggs"), k=20, alpha=0.5)
    assert sum(h.chunk.source == HENS.source for h in everything) == 1
    docs = {d.source: d for d in await store.documents(KB)}
    assert (docs[HENS.source].title, docs[HENS.source].digest, docs[HENS.source].chunks) == (
        "Geese",
        changed.digest,
        1,
    )


async def test_delete_removes(store_kit: StoreKit, store: KnowledgeStore) -> None:
    await put_all(store_kit, store)
    assert await store.delete(KB, HENS.source) == len(HENS.chunks)
    assert await store.delete(KB, HENS.source) == 0
    hits = await store.search(KB, "eggs hatch", store_kit.query("eggs hatch"), k=10, alpha=0.5)
    assert hits and all(h.chunk.source == DUCKS.source for h in hits)
    assert [d.source for d in await store.documents(KB)] == [DUCKS.source]


async def test_documents_lists_sources_titles_digests_counts(
    store_kit: StoreKit, store: KnowledgeStore
) -> None:
    await put_all(store_kit, store)
    docs = await store.documents(KB)
    assert [(d.source, d.title, d.digest, d.chunks) for d in docs] == [
        (DUCKS.source, "Ducks", DUCKS.digest, 2),
        (HENS.source, "Hens", HENS.digest, 3),
    ]


async def test_knowledge_bases_are_isolated(store_kit: StoreKit, store: KnowledgeStore) -> None:
    await store_kit.put(store, "farm-a", HENS)
    await store_kit.put(store, "farm_b", DUCKS)
    assert {"farm-a", "farm_b"} <= set(await store.knowledge_bases())
    hits = await store.search("farm-a", "duck", store_kit.query("duck"), k=10, alpha=0.5)
    assert hits and all(h.chunk.source == HENS.source for h in hits)
    assert [d.source for d in await store.documents("farm_b")] == [DUCKS.source]
    assert await store.delete("farm_b", HENS.source) == 0


@pytest.mark.parametrize("kb", ["nowhere", "../etc", "", "a" * 65])
async def test_unknown_kb_is_empty(store_kit: StoreKit, store: KnowledgeStore, kb: str) -> None:
    await put_all(store_kit, store)
    assert await store.search(kb, "eggs", store_kit.query("eggs"), k=3) == []
    assert await store.documents(kb) == []
    assert await store.delete(kb, HENS.source) == 0
    assert kb not in await store.knowledge_bases()


async def test_fts_syntax_in_a_query_never_errors(store_kit: StoreKit, store: KnowledgeStore) -> None:
    await put_all(store_kit, store)
    for query in [
        '"AND OR NOT * ( ) : ^ -',
        "NEAR(eggs ducks, 2)",
        'eggs" OR "',
        "*",
        "-",
        "",
        "   ",
        "title:eggs",
    ]:
        hits = await store.search(KB, query, store_kit.query(query), k=3, alpha=0.5)
        assert len(hits) <= 3
    hits = await store.search(KB, 'duck" AND (eggs OR', store_kit.query("duck eggs"), k=3, alpha=0.0)
    assert DUCKS.source in {h.chunk.source for h in hits}


async def test_similarity_is_a_real_cosine(store_kit: StoreKit, store: KnowledgeStore) -> None:
    await put_all(store_kit, store)
    query = store_kit.query("eggs hatch days")
    passages = {
        c.id: v
        for doc in (HENS, DUCKS)
        for c, v in zip(
            doc.chunks, store_kit.embedder.embed_passages([c.text for c in doc.chunks]), strict=True
        )
    }
    # a query vector that is not unit length: similarity must still be the cosine
    hits = await store.search(KB, "eggs hatch days", 3.0 * query, k=5, alpha=0.5)
    assert hits
    for hit in hits:
        v = passages[hit.chunk.id]
        want = float(v @ query / (np.linalg.norm(v) * np.linalg.norm(query)))
        assert hit.similarity == pytest.approx(want, abs=1e-5)


async def test_rows_written_by_another_instance_are_searchable_at_once(store_kit: StoreKit) -> None:
    reader, writer = store_kit.open(), store_kit.open()
    await store_kit.put(writer, KB, HENS)
    assert texts(await reader.search(KB, "lockdown", store_kit.query("lockdown"), k=1, alpha=0.5)) == [
        HENS.chunks[1].text
    ]
    await store_kit.put(writer, KB, DUCKS)  # the reader has its index now: it must see what changed since
    assert texts(await reader.search(KB, "ducklings", store_kit.query("ducklings"), k=1, alpha=1.0)) == [
        DUCKS.chunks[1].text
    ]
    await writer.delete(KB, HENS.source)
    hits = await reader.search(KB, "lockdown eggs", store_kit.query("lockdown eggs"), k=10, alpha=0.5)
    assert all(h.chunk.source == DUCKS.source for h in hits)
    assert [d.source for d in await reader.documents(KB)] == [DUCKS.source]


async def test_mixing_embedders_in_one_kb_is_refused(store_kit: StoreKit, store: KnowledgeStore) -> None:
    await put_all(store_kit, store)
    other = store_kit.open(embedder_name="another-model", dim=store_kit.embedder.dim)
    with pytest.raises(EmbedderMismatchError, match="another-model"):
        await other.upsert(KB, DUCKS, store_kit.embedder.embed_passages([c.text for c in DUCKS.chunks]))
    with pytest.raises(EmbedderMismatchError):
        await other.search(KB, "eggs", store_kit.query("eggs"), k=3)
    await store_kit.put(store, KB, DUCKS)  # the right embedder still writes
    await other.upsert("elsewhere", DUCKS, store_kit.embedder.embed_passages([c.text for c in DUCKS.chunks]))


async def test_wrong_vector_shapes_are_refused(store_kit: StoreKit, store: KnowledgeStore) -> None:
    with pytest.raises(ValueError):
        await store.upsert(KB, HENS, np.zeros((1, store_kit.embedder.dim), dtype=np.float32))
    assert await store.documents(KB) == []


async def test_ready(store: KnowledgeStore) -> None:
    assert await store.ready()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=st.text(max_size=80))
async def test_any_text_is_a_valid_query(store_kit: StoreKit, store: KnowledgeStore, query: str) -> None:
    if not await store.documents(KB):
        await put_all(store_kit, store)
    hits = await store.search(KB, query, store_kit.query(query), k=2, alpha=0.3)
    assert len(hits) <= 2
    assert all(-1.0 - 1e-6 <= h.similarity <= 1.0 + 1e-6 for h in hits)
