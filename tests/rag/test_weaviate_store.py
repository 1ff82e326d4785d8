"""The Weaviate store offline: its pure parts (collection config, ids, filters, objects, result mapping) and the
requests it makes, against a recording stand-in for the async client. Against a real server the shared contract
(test_store_contract.py) runs when PARLEY_WEAVIATE_URL is set."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

pytest.importorskip("weaviate", reason="weaviate-client not installed (pip install 'parley[weaviate]')")

from weaviate.classes.config import DataType, Tokenization  # noqa: E402
from weaviate.classes.query import HybridFusion  # noqa: E402
from weaviate.collections.classes.batch import BatchObjectReturn, DeleteManyReturn  # noqa: E402
from weaviate.collections.classes.internal import MetadataReturn, Object, QueryReturn  # noqa: E402

from parley.rag.embedder import EmbedderMismatchError  # noqa: E402
from parley.rag.weaviate_store import (  # noqa: E402
    VECTOR_NAME,
    WeaviateStore,
    check_embedder,
    chunk_collection_config,
    chunk_objects,
    chunk_uuid,
    connection_params,
    document_info,
    document_object,
    documents_collection_config,
    hits_from_objects,
    source_filter,
    stale_filter,
)
from parley.settings import Settings  # noqa: E402

from .conftest import HashEmbedder, make_document  # noqa: E402

EMB = HashEmbedder()
DOC = make_document("docs/hens.md", ["Hens lay eggs.", "Chicks need warmth."], title="Hens")


# --- pure ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "want"),
    [
        ("http://localhost:8080", ("localhost", 8080, False)),
        ("https://kb.example.com", ("kb.example.com", 443, True)),
        ("weaviate:8080", ("weaviate", 8080, False)),
        ("http://10.0.0.5", ("10.0.0.5", 80, False)),
    ],
)
def test_connection_params(url: str, want: tuple[str, int, bool]) -> None:
    p = connection_params(url, 50051)
    assert (p.http_host, p.http_port, p.http_secure) == want
    assert (p.grpc_host, p.grpc_port, p.grpc_secure) == (want[0], 50051, want[2])


def test_connection_params_refuse_other_schemes() -> None:
    with pytest.raises(ValueError, match="weaviate_url"):
        connection_params("grpc://x:1", 50051)


def test_chunk_collection_config() -> None:
    config = chunk_collection_config("ParleyChunk")
    assert config["name"] == "ParleyChunk"
    props = {p.name: p for p in config["properties"]}
    assert set(props) == {"source", "title", "headings", "text", "ordinal", "chunk_id", "digest", "revision"}
    assert props["headings"].dataType == DataType.TEXT_ARRAY
    assert props["ordinal"].dataType == DataType.INT
    for name in ("source", "chunk_id", "digest", "revision"):  # exact-match filters, never BM25
        assert props[name].indexSearchable is False and props[name].tokenization == Tokenization.FIELD
    assert config["multi_tenancy_config"].enabled is True
    assert config["vector_config"].name == VECTOR_NAME
    assert config["vector_config"].vectorizer.vectorizer.value == "none"
    docs = documents_collection_config("ParleyChunkDocuments")
    assert {p.name for p in docs["properties"]} == {"source", "title", "digest", "chunks", "embedder", "dim"}
    assert docs["multi_tenancy_config"].enabled is True


def test_ids_are_deterministic_uuid5() -> None:
    chunk = DOC.chunks[0]
    first = chunk_uuid("kb", DOC.source, chunk.id)
    assert first == chunk_uuid("kb", DOC.source, chunk.id)
    assert uuid.UUID(first).version == 5
    assert first != chunk_uuid("other", DOC.source, chunk.id)
    assert first != chunk_uuid("kb", "docs/other.md", chunk.id)


def test_chunk_and_document_objects() -> None:
    vectors = EMB.embed_passages([c.text for c in DOC.chunks])
    objects = chunk_objects("kb", DOC, vectors, "rev1")
    assert [o.uuid for o in objects] == [chunk_uuid("kb", DOC.source, c.id) for c in DOC.chunks]
    props = objects[1].properties
    assert props == {
        "source": DOC.source,
        "title": "Hens",
        "headings": [],
        "text": "Chicks need warmth.",
        "ordinal": 1,
        "chunk_id": DOC.chunks[1].id,
        "digest": DOC.digest,
        "revision": "rev1",
    }
    assert isinstance(objects[0].vector, dict)
    np.testing.assert_allclose(objects[0].vector[VECTOR_NAME], vectors[0], rtol=1e-6)
    record = document_object("kb", DOC, "m", 64)
    assert record.vector is None
    assert record.properties == {
        "source": DOC.source,
        "title": "Hens",
        "digest": DOC.digest,
        "chunks": 2,
        "embedder": "m",
        "dim": 64,
    }
    assert document_info(record.properties).chunks == 2


def _describe(f: Any) -> Any:
    if hasattr(f, "filters"):
        return (type(f).__name__, [_describe(x) for x in f.filters])
    return (f.target, f.operator.value, f.value)


def test_filters() -> None:
    assert _describe(source_filter("a.md")) == ("source", "Equal", "a.md")
    assert _describe(stale_filter("a.md", "r2")) == (
        "_FilterAnd",
        [("source", "Equal", "a.md"), ("revision", "NotEqual", "r2")],
    )


def _obj(props: dict[str, Any], vector: list[float], score: float) -> Object[Any, Any]:
    return Object(
        uuid=uuid.uuid4(),
        metadata=MetadataReturn(score=score),
        properties=props,
        references=None,
        vector={VECTOR_NAME: vector},
        collection="ParleyChunk",
    )


def test_hits_from_objects() -> None:
    props = {
        "source": "a.md",
        "title": "A",
        "headings": ["H1", "H2"],
        "text": "t",
        "ordinal": 3,
        "chunk_id": "c",
    }
    query = np.array([3.0, 4.0], dtype=np.float32)
    (hit,) = hits_from_objects([_obj(props, [1.0, 0.0], 0.75)], query)
    assert hit.score == 0.75
    assert hit.similarity == pytest.approx(0.6)
    assert (hit.chunk.id, hit.chunk.headings, hit.chunk.ordinal, hit.chunk.heading_path) == (
        "c",
        ("H1", "H2"),
        3,
        "H1 > H2",
    )


def test_check_embedder() -> None:
    check_embedder("kb", None, "m", 64)
    check_embedder("kb", {"embedder": "m", "dim": 64}, "m", 64)
    with pytest.raises(EmbedderMismatchError, match="other"):
        check_embedder("kb", {"embedder": "other", "dim": 64}, "m", 64)


def test_from_settings_and_make_store(tmp_path: Any) -> None:
    from parley.rag.embedded import EmbeddedStore
    from parley.rag.stores import make_store

    settings = Settings(
        weaviate_url="https://w.example:8443", weaviate_grpc_port=443, weaviate_collection="Kb"
    )
    store = make_store(settings, EMB)
    assert isinstance(store, WeaviateStore)  # nothing connects before the first call
    assert (store.params.http_port, store.params.grpc_port, store.collection) == (8443, 443, "Kb")
    assert store.documents_collection == "KbDocuments"
    assert (store.embedder_name, store.dim) == (EMB.name, EMB.dim)
    embedded = make_store(Settings(weaviate_url="", kb_dir=str(tmp_path)), EMB)
    assert isinstance(embedded, EmbeddedStore)
    assert embedded.path == tmp_path


# --- the requests, against a recording stand-in for the client ---------------------------------------------


@dataclass
class FakeTenants:
    names: set[str]

    async def exists(self, name: str) -> bool:
        return name in self.names

    async def create(self, tenants: list[Any]) -> None:
        self.names.update(t.name for t in tenants)

    async def get(self) -> dict[str, Any]:
        return {n: object() for n in self.names}


@dataclass
class FakeCollection:
    name: str
    tenants: FakeTenants
    calls: list[tuple[str, str | None, Any]]
    tenant: str | None = None
    delete_matches: list[int] = field(default_factory=list)
    fetched: list[Object[Any, Any]] = field(default_factory=list)

    def with_tenant(self, tenant: str) -> FakeCollection:
        self.tenant = tenant
        return self

    @property
    def data(self) -> FakeCollection:
        return self

    @property
    def query(self) -> FakeCollection:
        return self

    async def insert_many(self, objects: list[Any]) -> BatchObjectReturn:
        self.calls.append((f"{self.name}.insert_many", self.tenant, objects))
        return BatchObjectReturn()

    async def delete_many(self, where: Any) -> DeleteManyReturn[None]:
        self.calls.append((f"{self.name}.delete_many", self.tenant, _describe(where)))
        matches = self.delete_matches.pop(0) if self.delete_matches else 0
        return DeleteManyReturn(failed=0, matches=matches, objects=None, successful=matches)

    async def delete_by_id(self, uid: str) -> bool:
        self.calls.append((f"{self.name}.delete_by_id", self.tenant, uid))
        return True

    async def fetch_objects(self, **kwargs: Any) -> QueryReturn[Any, Any]:
        self.calls.append((f"{self.name}.fetch_objects", self.tenant, kwargs))
        return QueryReturn(objects=self.fetched[: kwargs.get("limit") or None])

    async def hybrid(self, **kwargs: Any) -> QueryReturn[Any, Any]:
        self.calls.append((f"{self.name}.hybrid", self.tenant, kwargs))
        return QueryReturn(objects=self.fetched)

    async def _iterate(self) -> AsyncIterator[Object[Any, Any]]:
        for obj in self.fetched:
            yield obj

    def iterator(self, **kwargs: Any) -> AsyncIterator[Object[Any, Any]]:
        self.calls.append((f"{self.name}.iterator", self.tenant, kwargs))
        return self._iterate()


class FakeCollections:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None, Any]] = []
        self.tenants = FakeTenants(set())
        self.by_name = {
            name: FakeCollection(name, self.tenants, self.calls)
            for name in ("ParleyChunk", "ParleyChunkDocuments")
        }

    def use(self, name: str) -> FakeCollection:
        return self.by_name[name]


class FakeClient:
    def __init__(self) -> None:
        self.collections = FakeCollections()

    async def close(self) -> None:
        pass


def fake_store(embedder_name: str = EMB.name) -> tuple[WeaviateStore, FakeClient]:
    store = WeaviateStore(
        connection_params("http://localhost:8080", 50051),
        collection="ParleyChunk",
        embedder_name=embedder_name,
        dim=EMB.dim,
    )
    client = FakeClient()
    store._client = client  # type: ignore[assignment]
    return store, client


async def test_upsert_writes_chunks_then_drops_stale_then_records() -> None:
    store, client = fake_store()
    vectors = EMB.embed_passages([c.text for c in DOC.chunks])
    await store.upsert("farm", DOC, vectors)
    assert "farm" in client.collections.tenants.names
    calls = [(name, tenant) for name, tenant, _ in client.collections.calls]
    assert calls == [
        ("ParleyChunkDocuments.fetch_objects", "farm"),  # the embedder check
        ("ParleyChunk.insert_many", "farm"),
        ("ParleyChunk.delete_many", "farm"),
        ("ParleyChunkDocuments.insert_many", "farm"),
    ]
    inserted = client.collections.calls[1][2]
    revision = inserted[0].properties["revision"]
    assert client.collections.calls[2][2] == (
        "_FilterAnd",
        [("source", "Equal", DOC.source), ("revision", "NotEqual", revision)],
    )
    assert client.collections.calls[3][2][0].properties["embedder"] == EMB.name


async def test_delete_loops_until_nothing_matches() -> None:
    store, client = fake_store()
    client.collections.tenants.names.add("farm")
    client.collections.by_name["ParleyChunk"].delete_matches = [10_000, 10_000, 42, 0]
    assert await store.delete("farm", DOC.source) == 20_042
    names = [name for name, _, _ in client.collections.calls]
    assert names.count("ParleyChunk.delete_many") == 4
    assert names[-1] == "ParleyChunkDocuments.delete_by_id"


async def test_search_asks_for_relative_score_fusion_and_vectors() -> None:
    store, client = fake_store()
    client.collections.tenants.names.add("farm")
    chunks = client.collections.by_name["ParleyChunk"]
    chunks.fetched = [_obj({"source": "a.md", "text": "eggs", "chunk_id": "c"}, [1.0] + [0.0] * 63, 0.9)]
    query = EMB.embed_queries(["eggs"])[0]
    hits = await store.search("farm", "eggs (AND", query, k=4, alpha=0.3)
    assert [h.chunk.text for h in hits] == ["eggs"]
    assert hits[0].similarity == pytest.approx(float(query[0]), abs=1e-6)
    (name, tenant, kwargs) = client.collections.calls[-1]
    assert (name, tenant) == ("ParleyChunk.hybrid", "farm")
    assert kwargs["fusion_type"] == HybridFusion.RELATIVE_SCORE
    assert (kwargs["alpha"], kwargs["limit"], kwargs["query"]) == (0.3, 4, "eggs (AND")
    assert kwargs["target_vector"] == VECTOR_NAME and kwargs["include_vector"] == [VECTOR_NAME]
    assert kwargs["query_properties"] == ["title", "headings", "text"]
    await store.search("farm", "?!", query, k=4, alpha=0.3)  # no words: vector only
    assert (
        client.collections.calls[-1][2]["alpha"] == 1.0 and client.collections.calls[-1][2]["query"] is None
    )


async def test_unknown_tenant_is_empty_without_a_query() -> None:
    store, client = fake_store()
    assert await store.search("nowhere", "eggs", EMB.embed_queries(["eggs"])[0], k=3) == []
    assert await store.documents("nowhere") == []
    assert await store.delete("nowhere", "a.md") == 0
    assert client.collections.calls == []


async def test_documents_and_mismatch_from_the_records() -> None:
    store, client = fake_store(embedder_name="another")
    client.collections.tenants.names.add("farm")
    records = client.collections.by_name["ParleyChunkDocuments"]
    records.fetched = [
        _obj(document_object("farm", DOC, EMB.name, EMB.dim).properties, [], 0.0),
        _obj({**document_object("farm", DOC, EMB.name, EMB.dim).properties, "source": "a.md"}, [], 0.0),
    ]
    assert [d.source for d in await store.documents("farm")] == ["a.md", DOC.source]
    with pytest.raises(EmbedderMismatchError, match="another"):
        await store.upsert("farm", DOC, EMB.embed_passages([c.text for c in DOC.chunks]))
    with pytest.raises(EmbedderMismatchError):
        await store.search("farm", "eggs", EMB.embed_queries(["eggs"])[0], k=3)
    assert await store.knowledge_bases() == ["farm"]
