"""The production knowledge store: Weaviate (official ``weaviate-client`` v4, async), one tenant per knowledge base.

Two multi-tenant collections (``settings.weaviate_collection``, ``ParleyChunk`` by default):

- ``<collection>``: one object per chunk, with its self-provided vector (named ``passage``; cosine HNSW) and the
  properties source, title, headings, text, ordinal, chunk_id, digest and revision. BM25 runs over title, headings
  and text only. Object ids are ``uuid5(kb, source, chunk_id)``: the same chunk always lands on the same object.
- ``<collection>Documents``: one object per document (source, title, digest, chunk count, embedder, dim) with no
  vector. ``documents()`` lists these; the embedder recorded here is checked before a knowledge base is written to
  or searched with another one.

An upsert writes the chunks first (same ids overwrite) with a fresh ``revision``, then deletes the document's
chunks of any other revision (``delete_many`` removes at most 10,000 per call: looped until none is left), then
writes the document record. The document is searchable throughout, never half gone.

Hybrid search asks for ``fusion_type=RELATIVE_SCORE`` with an explicit ``alpha`` and returns the vectors, so
``Hit.similarity`` is the true cosine computed here. The request building and the mapping of the client's objects
are pure functions (unit-tested offline: no Weaviate server runs in CI).
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import numpy as np

from parley.rag.embedder import EmbedderMismatchError
from parley.rag.types import KB_NAME_PATTERN, Chunk, Document, DocumentInfo, Hit, Matrix, Vector

if TYPE_CHECKING:
    from weaviate.client import WeaviateAsyncClient
    from weaviate.collections import CollectionAsync
    from weaviate.collections.classes.data import DataObject
    from weaviate.collections.classes.filters import _Filters

    from parley.settings import Settings

logger = logging.getLogger(__name__)

VECTOR_NAME = "passage"
SEARCH_PROPERTIES = ["title", "headings", "text"]
CHUNK_PROPERTIES = ["source", "title", "headings", "text", "ordinal", "chunk_id", "digest"]
DOCUMENT_PROPERTIES = ["source", "title", "digest", "chunks", "embedder", "dim"]
DELETE_ROUNDS_MAX = 1000  # 10,000 objects each
_KB_NAME = re.compile(KB_NAME_PATTERN)
_WORD = re.compile(r"\w")


# --- pure: configuration, ids, filters, objects, results ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnectionParams:
    http_host: str
    http_port: int
    http_secure: bool
    grpc_host: str
    grpc_port: int
    grpc_secure: bool


def connection_params(url: str, grpc_port: int) -> ConnectionParams:
    """``http(s)://host[:port]`` -> the client's parameters (gRPC on the same host, ``grpc_port``, same TLS)."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"weaviate_url must be http(s)://host[:port], got {url!r}")
    secure = parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    return ConnectionParams(parts.hostname, port, secure, parts.hostname, grpc_port, secure)


def documents_collection_name(collection: str) -> str:
    return f"{collection}Documents"


def chunk_collection_config(name: str) -> dict[str, Any]:
    """Keyword arguments of ``client.collections.create`` for the chunk collection."""
    from weaviate.classes.config import Configure, DataType, Property, Tokenization

    def keyword(
        prop: str, data_type: DataType = DataType.TEXT
    ) -> Property:  # filterable, never BM25-searched
        return Property(
            name=prop, data_type=data_type, index_searchable=False, tokenization=Tokenization.FIELD
        )

    return {
        "name": name,
        "description": "Parley knowledge-base chunks (one tenant per knowledge base)",
        "properties": [
            keyword("source"),
            Property(name="title", data_type=DataType.TEXT, tokenization=Tokenization.WORD),
            Property(name="headings", data_type=DataType.TEXT_ARRAY, tokenization=Tokenization.WORD),
            Property(name="text", data_type=DataType.TEXT, tokenization=Tokenization.WORD),
            Property(name="ordinal", data_type=DataType.INT),
            keyword("chunk_id"),
            keyword("digest"),
            keyword("revision"),
        ],
        "vector_config": Configure.Vectors.self_provided(name=VECTOR_NAME),
        "multi_tenancy_config": Configure.multi_tenancy(
            enabled=True, auto_tenant_creation=True, auto_tenant_activation=True
        ),
    }


def documents_collection_config(name: str) -> dict[str, Any]:
    """Keyword arguments of ``client.collections.create`` for the document records (no vectors)."""
    from weaviate.classes.config import Configure, DataType, Property, Tokenization

    def keyword(prop: str) -> Property:
        return Property(
            name=prop, data_type=DataType.TEXT, index_searchable=False, tokenization=Tokenization.FIELD
        )

    return {
        "name": name,
        "description": "Parley knowledge-base documents (one tenant per knowledge base)",
        "properties": [
            keyword("source"),
            Property(name="title", data_type=DataType.TEXT, index_searchable=False),
            keyword("digest"),
            Property(name="chunks", data_type=DataType.INT),
            keyword("embedder"),
            Property(name="dim", data_type=DataType.INT),
        ],
        "vector_config": Configure.Vectors.self_provided(),
        "multi_tenancy_config": Configure.multi_tenancy(
            enabled=True, auto_tenant_creation=True, auto_tenant_activation=True
        ),
    }


def chunk_uuid(kb: str, source: str, chunk_id: str) -> str:
    from weaviate.util import generate_uuid5

    return str(generate_uuid5(chunk_id, f"{kb}\x1f{source}"))


def document_uuid(kb: str, source: str) -> str:
    from weaviate.util import generate_uuid5

    return str(generate_uuid5(source, f"{kb}\x1fdocument"))


def chunk_objects(kb: str, document: Document, vectors: Matrix, revision: str) -> list[DataObject[Any, Any]]:
    from weaviate.classes.data import DataObject

    return [
        DataObject(
            uuid=chunk_uuid(kb, document.source, chunk.id),
            properties={
                "source": document.source,
                "title": chunk.title,
                "headings": list(chunk.headings),
                "text": chunk.text,
                "ordinal": chunk.ordinal,
                "chunk_id": chunk.id,
                "digest": document.digest,
                "revision": revision,
            },
            vector={VECTOR_NAME: [float(x) for x in vectors[i]]},
        )
        for i, chunk in enumerate(document.chunks)
    ]


def document_object(kb: str, document: Document, embedder_name: str, dim: int) -> DataObject[Any, Any]:
    from weaviate.classes.data import DataObject

    return DataObject(
        uuid=document_uuid(kb, document.source),
        properties={
            "source": document.source,
            "title": document.title,
            "digest": document.digest,
            "chunks": len(document.chunks),
            "embedder": embedder_name,
            "dim": dim,
        },
    )


def source_filter(source: str) -> _Filters:
    from weaviate.classes.query import Filter

    return Filter.by_property("source").equal(source)


def stale_filter(source: str, revision: str) -> _Filters:
    """The document's chunks written by an earlier upsert."""
    from weaviate.classes.query import Filter

    return Filter.by_property("source").equal(source) & Filter.by_property("revision").not_equal(revision)


def chunk_from_properties(props: Mapping[str, Any]) -> Chunk:
    return Chunk(
        id=str(props.get("chunk_id") or ""),
        source=str(props.get("source") or ""),
        title=str(props.get("title") or ""),
        headings=tuple(str(h) for h in props.get("headings") or ()),
        text=str(props.get("text") or ""),
        ordinal=int(props.get("ordinal") or 0),
    )


def cosine(a: Sequence[float] | Vector, b: Vector) -> float:
    va, vb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    denom = float(np.linalg.norm(va) * np.linalg.norm(vb))
    return float(va @ vb) / denom if denom > 0 else 0.0


def hits_from_objects(objects: Sequence[Any], query_vector: Vector) -> list[Hit]:
    """A hybrid query's ``QueryReturn.objects`` -> hits (score: Weaviate's fused score; similarity: cosine of the
    returned vector to the query)."""
    hits = []
    for obj in objects:
        vectors = obj.vector or {}
        vector = vectors.get(VECTOR_NAME) if isinstance(vectors, Mapping) else vectors
        score = obj.metadata.score if obj.metadata is not None else None
        hits.append(
            Hit(
                chunk=chunk_from_properties(obj.properties),
                score=float(score or 0.0),
                similarity=cosine(vector, query_vector) if vector else 0.0,
            )
        )
    return hits


def document_info(props: Mapping[str, Any]) -> DocumentInfo:
    return DocumentInfo(
        source=str(props.get("source") or ""),
        title=str(props.get("title") or ""),
        digest=str(props.get("digest") or ""),
        chunks=int(props.get("chunks") or 0),
    )


def check_embedder(kb: str, props: Mapping[str, Any] | None, name: str, dim: int) -> None:
    if props is None:
        return
    stored_name, stored_dim = props.get("embedder"), props.get("dim")
    if stored_name != name or (stored_dim is not None and int(stored_dim) != dim):
        raise EmbedderMismatchError(
            f"knowledge base {kb} was built with embedder {stored_name!r} ({stored_dim} dims), not {name!r} "
            f"({dim} dims): search it with the same embedder, or ingest into another knowledge base"
        )


def _check_kb(kb: str) -> None:
    if not _KB_NAME.match(kb):
        raise ValueError(f"invalid knowledge base name {kb!r} (letters, digits, '_' and '-', at most 64)")


# --- the store ------------------------------------------------------------------------------------------------


class WeaviateStore:
    """``KnowledgeStore`` on Weaviate. Connects on first use."""

    def __init__(
        self,
        params: ConnectionParams,
        *,
        collection: str,
        embedder_name: str,
        dim: int,
        api_key: str = "",
        timeout_s: float = 30.0,
    ) -> None:
        self.params = params
        self.collection = collection
        self.documents_collection = documents_collection_name(collection)
        self.embedder_name = embedder_name
        self.dim = dim
        self._api_key = api_key
        self._timeout_s = timeout_s
        self._client: WeaviateAsyncClient | None = None
        self._connect_lock = asyncio.Lock()
        self._tenants: set[str] = set()  # known to exist
        self._checked: set[str] = set()  # embedder verified

    @classmethod
    def from_settings(cls, settings: Settings, *, embedder_name: str, dim: int) -> WeaviateStore:
        return cls(
            connection_params(settings.weaviate_url, settings.weaviate_grpc_port),
            collection=settings.weaviate_collection,
            embedder_name=embedder_name,
            dim=dim,
            api_key=settings.weaviate_api_key.get_secret_value(),
        )

    async def _connect(self) -> WeaviateAsyncClient:
        async with self._connect_lock:
            if self._client is None:
                import weaviate
                from weaviate.classes.init import AdditionalConfig, Auth, Timeout

                p = self.params
                client = weaviate.use_async_with_custom(
                    http_host=p.http_host,
                    http_port=p.http_port,
                    http_secure=p.http_secure,
                    grpc_host=p.grpc_host,
                    grpc_port=p.grpc_port,
                    grpc_secure=p.grpc_secure,
                    auth_credentials=Auth.api_key(self._api_key) if self._api_key else None,
                    additional_config=AdditionalConfig(
                        timeout=Timeout(init=10, query=self._timeout_s, insert=self._timeout_s)
                    ),
                )
                await client.connect()
                try:
                    for config in (
                        chunk_collection_config(self.collection),
                        documents_collection_config(self.documents_collection),
                    ):
                        await self._ensure_collection(client, config)
                except BaseException:
                    await client.close()
                    raise
                self._client = client
                logger.info("connected to Weaviate at %s:%d", p.http_host, p.http_port)
            return self._client

    @staticmethod
    async def _ensure_collection(client: WeaviateAsyncClient, config: dict[str, Any]) -> None:
        if await client.collections.exists(config["name"]):
            return
        try:
            await client.collections.create(**config)
            logger.info("created Weaviate collection %s", config["name"])
        except Exception:
            if not await client.collections.exists(config["name"]):  # else: another process created it
                raise

    async def _chunks(self, kb: str) -> CollectionAsync[Any, Any]:
        client = await self._connect()
        return client.collections.use(self.collection).with_tenant(kb)

    async def _docs(self, kb: str) -> CollectionAsync[Any, Any]:
        client = await self._connect()
        return client.collections.use(self.documents_collection).with_tenant(kb)

    async def _tenant_exists(self, kb: str) -> bool:
        if kb in self._tenants:
            return True
        client = await self._connect()
        if await client.collections.use(self.collection).tenants.exists(kb):
            self._tenants.add(kb)
            return True
        return False

    async def _ensure_tenant(self, kb: str) -> None:
        if await self._tenant_exists(kb):
            return
        from weaviate.classes.tenants import Tenant

        client = await self._connect()
        for name in (self.collection, self.documents_collection):
            tenants = client.collections.use(name).tenants
            if not await tenants.exists(kb):
                try:
                    await tenants.create([Tenant(name=kb)])
                except Exception:
                    if not await tenants.exists(kb):
                        raise
        self._tenants.add(kb)

    async def _check_embedder(self, kb: str) -> None:
        if kb in self._checked:
            return
        docs = await self._docs(kb)
        result = await docs.query.fetch_objects(limit=1, return_properties=["embedder", "dim"])
        check_embedder(
            kb, result.objects[0].properties if result.objects else None, self.embedder_name, self.dim
        )
        if result.objects:
            self._checked.add(kb)

    async def upsert(self, kb: str, document: Document, vectors: Matrix) -> None:
        _check_kb(kb)
        if vectors.shape != (len(document.chunks), self.dim):
            raise ValueError(
                f"{document.source}: vectors of shape {vectors.shape}, want ({len(document.chunks)}, {self.dim})"
            )
        await self._ensure_tenant(kb)
        await self._check_embedder(kb)
        revision = uuid.uuid4().hex
        chunks = await self._chunks(kb)
        if document.chunks:
            result = await chunks.data.insert_many(chunk_objects(kb, document, vectors, revision))
            if result.has_errors:
                first = next(iter(result.errors.values()))
                raise RuntimeError(
                    f"Weaviate refused {len(result.errors)} chunks of {document.source}: {first.message}"
                )
        await self._delete_where(chunks, stale_filter(document.source, revision))
        docs = await self._docs(kb)
        result = await docs.data.insert_many([document_object(kb, document, self.embedder_name, self.dim)])
        if result.has_errors:
            raise RuntimeError(f"Weaviate refused the record of {document.source}: {result.errors}")
        self._checked.add(kb)

    @staticmethod
    async def _delete_where(collection: CollectionAsync[Any, Any], where: _Filters) -> int:
        deleted = 0
        for _ in range(DELETE_ROUNDS_MAX):
            result = await collection.data.delete_many(where=where)
            deleted += result.successful
            if result.matches == 0 or result.successful == 0:
                if result.failed:
                    raise RuntimeError(f"Weaviate failed to delete {result.failed} objects")
                return deleted
        raise RuntimeError("Weaviate delete_many kept finding objects")

    async def delete(self, kb: str, source: str) -> int:
        if not _KB_NAME.match(kb) or not await self._tenant_exists(kb):
            return 0
        deleted = await self._delete_where(await self._chunks(kb), source_filter(source))
        await (await self._docs(kb)).data.delete_by_id(document_uuid(kb, source))
        return deleted

    async def documents(self, kb: str) -> list[DocumentInfo]:
        if not _KB_NAME.match(kb) or not await self._tenant_exists(kb):
            return []
        docs = await self._docs(kb)
        found = [
            document_info(obj.properties)
            async for obj in docs.iterator(return_properties=DOCUMENT_PROPERTIES)
        ]
        return sorted(found, key=lambda d: d.source)

    async def search(self, kb: str, query: str, vector: Vector, *, k: int, alpha: float = 0.5) -> list[Hit]:
        if k <= 0 or not _KB_NAME.match(kb) or not await self._tenant_exists(kb):
            return []
        await self._check_embedder(kb)
        from weaviate.classes.query import HybridFusion, MetadataQuery

        has_words = _WORD.search(query) is not None
        chunks = await self._chunks(kb)
        result = await chunks.query.hybrid(
            query=query if has_words else None,
            vector=[float(x) for x in vector],
            alpha=min(max(alpha, 0.0), 1.0) if has_words else 1.0,
            fusion_type=HybridFusion.RELATIVE_SCORE,
            query_properties=SEARCH_PROPERTIES,
            target_vector=VECTOR_NAME,
            limit=k,
            include_vector=[VECTOR_NAME],
            return_metadata=MetadataQuery(score=True),
            return_properties=CHUNK_PROPERTIES,
        )
        return hits_from_objects(result.objects, vector)

    async def knowledge_bases(self) -> list[str]:
        client = await self._connect()
        tenants = await client.collections.use(self.collection).tenants.get()
        return sorted(tenants)

    async def ready(self) -> bool:
        try:
            client = await self._connect()
            return bool(await client.is_ready())
        except Exception as exc:
            logger.warning("Weaviate not ready: %s", exc)
            return False

    async def drop_collections(self) -> None:
        """Delete both collections and everything in them (tests, resets)."""
        client = await self._connect()
        for name in (self.collection, self.documents_collection):
            await client.collections.delete(name)
        self._tenants.clear()
        self._checked.clear()

    async def aclose(self) -> None:
        async with self._connect_lock:
            if self._client is not None:
                await self._client.close()
                self._client = None
