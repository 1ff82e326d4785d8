"""The embedded knowledge store: one SQLite file per knowledge base (``<path>/<kb>.sqlite``), no server.

- ``chunks``: the passages with their vectors (float32 blobs); ``chunks_fts``: an FTS5 index (porter, unicode61)
  over title, heading path and text, for BM25; ``documents``: source, title, digest, chunk count; ``meta``: the
  embedder's name and dimension (a knowledge base never mixes two embedders), the schema version and a
  ``generation`` bumped by every write.
- Vector search runs on a numpy matrix held in memory per knowledge base. Each search reads ``generation`` (one
  cheap query) and, when another connection or process wrote since, brings the matrix up to date in the same read
  transaction: new rows are those past the highest rowid seen (``AUTOINCREMENT`` never reuses one), removed rows
  are listed with their generation in ``removed``. So ``parley ingest`` in another process is searchable at once,
  and a refresh costs what changed, not the whole knowledge base.
- Hybrid search is relative score fusion (Weaviate's ``relativeScoreFusion``): the top candidates of each leg,
  each leg's scores min-max normalised among its candidates, ``alpha * vector + (1 - alpha) * keywords``.
  ``Hit.similarity`` is the true cosine similarity of every hit.

WAL mode: readers never block the one writer, nor it them. Blocking work runs in threads (``asyncio.to_thread``);
per knowledge base there is one reading and one writing connection, each behind its own lock.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from parley.rag.embedder import EmbedderMismatchError
from parley.rag.types import KB_NAME_PATTERN, Chunk, Document, DocumentInfo, Hit, Matrix, Vector

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
REMOVED_LOG_KEEP = 1000  # generations of removed rowids kept; a reader further behind reloads its matrix
MAX_QUERY_TERMS = 32
COMMON_TERM_FRACTION = 0.25  # see _KbFile._selective_terms
COMMON_TERM_MIN_ROWS = 2000
_KB_NAME = re.compile(KB_NAME_PATTERN)
_TERM = re.compile(r"\w+")
_HEADINGS_SEP = "\x1f"
_T = TypeVar("_T", bound=np.generic)

# Words that match nearly every passage: they cost the BM25 leg time (every row containing them is scored) and
# add nothing to the ranking. Kept to function words so a question's content words all stay.
_STOP_WORDS_TEXT = """a an and are as at be been but by can could did do does for from had has have how i if in into
    is it its me my of on or our should so than that the their them then there these they this to was we were what when
    where which who why will with would you your"""
STOP_WORDS = frozenset(_STOP_WORDS_TEXT.split())

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value);
CREATE TABLE IF NOT EXISTS documents (
    source TEXT PRIMARY KEY, title TEXT NOT NULL, digest TEXT NOT NULL, chunks INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    rowid INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, source TEXT NOT NULL, title TEXT NOT NULL,
    headings TEXT NOT NULL, text TEXT NOT NULL, ordinal INTEGER NOT NULL, vector BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_by_source ON chunks (source);
CREATE TABLE IF NOT EXISTS removed (rowid INTEGER PRIMARY KEY, generation INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS removed_by_generation ON removed (generation);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5 (
    title, headings, text, content='chunks', content_rowid='rowid', tokenize='porter unicode61');
CREATE TRIGGER IF NOT EXISTS chunks_ai AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts (rowid, title, headings, text) VALUES (new.rowid, new.title, new.headings, new.text);
END;
CREATE TRIGGER IF NOT EXISTS chunks_ad AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts (chunks_fts, rowid, title, headings, text)
    VALUES ('delete', old.rowid, old.title, old.headings, old.text);
END;
"""


def query_terms(text: str, *, drop_stop_words: bool = True) -> list[str]:
    """The distinct words of user text, in order (stop words dropped unless nothing else is left)."""
    terms: list[str] = []
    for term in _TERM.findall(text.lower()):
        if term not in terms and not (drop_stop_words and term in STOP_WORDS):
            terms.append(term)
    if not terms and drop_stop_words:  # a query made only of stop words still searches for them
        return query_terms(text, drop_stop_words=False)
    return terms[:MAX_QUERY_TERMS]


def fts_query(terms: Sequence[str]) -> str | None:
    """Words -> an FTS5 query that cannot be a syntax error: each quoted, OR-ed. None when there are none."""
    return " OR ".join(f'"{t}"' for t in terms) or None


def relative_score_fusion(
    vector: dict[int, float], keyword: dict[int, float], alpha: float
) -> list[tuple[int, float]]:
    """Fuse two legs' candidates (key -> raw score, higher is better): each leg min-max normalised over its own
    candidates (all 1.0 when they tie), weighted ``alpha`` / ``1 - alpha``; a key missing from a leg gets 0
    there. Best first; ties by key for a stable order."""
    fused: dict[int, float] = {}
    for leg, weight in ((vector, alpha), (keyword, 1.0 - alpha)):
        if not leg or weight <= 0.0:
            continue
        low, high = min(leg.values()), max(leg.values())
        span = high - low
        for key, score in leg.items():
            norm = (score - low) / span if span > 0 else 1.0
            fused[key] = fused.get(key, 0.0) + weight * norm
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))


class _VectorIndex:
    """A knowledge base's vectors in memory, rows in rowid order, at one ``generation`` of the file."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.reset()

    def reset(self) -> None:
        self.generation = -1
        self.max_rowid = 0
        self.size = 0
        self.dead = 0
        self.rowids: npt.NDArray[np.int64] = np.zeros(0, dtype=np.int64)
        self.vectors: Matrix = np.zeros((0, self.dim), dtype=np.float32)
        self.inv_norms: npt.NDArray[np.float32] = np.zeros(0, dtype=np.float32)  # 1/|v|, 0 for a removed row

    def append(self, rowids: npt.NDArray[np.int64], vectors: Matrix) -> None:
        n = len(rowids)
        if n == 0:
            return
        if self.size + n > len(self.rowids):
            capacity = max(self.size + n, 2 * len(self.rowids), 1024)
            self.rowids = _grow(self.rowids, capacity)
            self.vectors = _grow(self.vectors, capacity)
            self.inv_norms = _grow(self.inv_norms, capacity)
        end = self.size + n
        self.rowids[self.size : end] = rowids
        self.vectors[self.size : end] = vectors
        norms = np.linalg.norm(vectors, axis=1)
        self.inv_norms[self.size : end] = np.where(norms > 0, 1.0 / np.maximum(norms, 1e-30), 0.0)
        self.size = end
        self.max_rowid = int(rowids[-1])

    def remove(self, rowids: Iterable[int]) -> None:
        wanted = np.fromiter(rowids, dtype=np.int64)
        if wanted.size == 0 or self.size == 0:
            return
        live = self.rowids[: self.size]
        pos = np.searchsorted(live, wanted)
        pos = pos[(pos < self.size) & (live[np.minimum(pos, self.size - 1)] == wanted)]
        pos = pos[self.inv_norms[pos] != 0]
        self.inv_norms[pos] = 0.0
        self.vectors[pos] = 0.0
        self.dead += len(pos)
        if self.dead > 1024 and self.dead * 4 > self.size:
            self._compact()

    def _compact(self) -> None:
        keep = np.flatnonzero(self.inv_norms[: self.size] != 0)
        self.rowids, self.vectors, self.inv_norms = (
            self.rowids[keep],
            self.vectors[keep],
            self.inv_norms[keep],
        )
        self.size, self.dead = len(keep), 0

    def cosines(self, query: Vector) -> npt.NDArray[np.float32]:
        """Cosine similarity of every row to ``query`` (a removed row: -2, below any cosine)."""
        q = (query / max(float(np.linalg.norm(query)), 1e-30)).astype(np.float32)
        # einsum: numpy's own single-threaded loop. A BLAS matrix-vector product spreads over all cores and,
        # on a busy machine, waits for them: 0.7 ms against 16 ms p50 at 10k x 384 with the cores shared.
        scores = np.einsum("ij,j->i", self.vectors[: self.size], q)
        scores *= self.inv_norms[: self.size]
        if self.dead:
            scores[self.inv_norms[: self.size] == 0] = -2.0
        return scores

    def top(self, query: Vector, n: int) -> dict[int, float]:
        live = self.size - self.dead
        if live <= 0:
            return {}
        scores = self.cosines(query)
        n = min(n, live)
        best = np.argpartition(-scores, n - 1)[:n] if n < self.size else np.arange(self.size)
        return {int(self.rowids[i]): float(scores[i]) for i in best if scores[i] > -2.0}

    def cosine_of(self, rowids: Sequence[int], query: Vector) -> list[float]:
        q = query / max(float(np.linalg.norm(query)), 1e-30)
        pos = np.searchsorted(self.rowids[: self.size], np.asarray(rowids, dtype=np.int64))
        sims = np.einsum("ij,j->i", self.vectors[pos], q.astype(np.float32)) * self.inv_norms[pos]
        return [float(s) for s in sims]


def _grow(array: npt.NDArray[_T], capacity: int) -> npt.NDArray[_T]:
    bigger = np.zeros((capacity, *array.shape[1:]), dtype=array.dtype)
    bigger[: len(array)] = array
    return bigger


@dataclass(frozen=True, slots=True)
class _Row:
    document: Document
    vectors: Matrix


class _KbFile:
    """One knowledge base's SQLite file: a reading connection (with the vector index) and a writing one."""

    def __init__(self, path: Path, embedder_name: str, dim: int) -> None:
        self.path = path
        self.embedder_name = embedder_name
        self.dim = dim
        self.read_lock = threading.Lock()
        self.write_lock = threading.Lock()
        self._reader: sqlite3.Connection | None = None
        self._writer: sqlite3.Connection | None = None
        self._schema_ready = False
        self._has_schema = False
        self.index = _VectorIndex(dim)
        self._df: dict[str, int] = {}  # document frequency of query terms, at _df_generation
        self._df_generation = -1

    def _connect(self, *, create: bool) -> sqlite3.Connection | None:
        if not create and not self.path.exists():
            return None
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
        conn.execute("PRAGMA busy_timeout = 30000")
        if create:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    def close(self) -> None:
        with self.read_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
            self.index.reset()
        with self.write_lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
                self._schema_ready = False

    # --- writing -------------------------------------------------------------------------------------------

    def write(self, upserts: Sequence[_Row], deletes: Sequence[str] = ()) -> int:
        """One transaction: documents replaced (or removed), the generation bumped. Returns chunks removed."""
        with self.write_lock:
            if self._writer is None:
                self._writer = self._connect(create=True)
            conn = self._writer
            assert conn is not None
            if not self._schema_ready:
                conn.executescript("BEGIN IMMEDIATE;" + _SCHEMA + "COMMIT;")
                self._schema_ready = True
            conn.execute("BEGIN IMMEDIATE")
            try:
                generation = self._check_meta(conn) + 1
                removed = 0
                for source in [*deletes, *(u.document.source for u in upserts)]:
                    removed += self._remove(conn, source, generation)
                for row in upserts:
                    self._insert(conn, row)
                conn.execute("UPDATE meta SET value = ? WHERE key = 'generation'", (generation,))
                floor = generation - REMOVED_LOG_KEEP
                if floor > 0:
                    conn.execute("DELETE FROM removed WHERE generation <= ?", (floor,))
                    conn.execute("UPDATE meta SET value = ? WHERE key = 'log_floor'", (floor,))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return removed

    def _check_meta(self, conn: sqlite3.Connection) -> int:
        initial = {
            "schema": SCHEMA_VERSION,
            "embedder": self.embedder_name,
            "dim": self.dim,
            "generation": 0,
            "log_floor": 0,
        }
        conn.executemany("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", initial.items())
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        _check_embedder(self.path, meta, self.embedder_name, self.dim)
        return int(meta["generation"])

    def _remove(self, conn: sqlite3.Connection, source: str, generation: int) -> int:
        rowids = [r for (r,) in conn.execute("SELECT rowid FROM chunks WHERE source = ?", (source,))]
        conn.execute("DELETE FROM chunks WHERE source = ?", (source,))
        conn.execute("DELETE FROM documents WHERE source = ?", (source,))
        conn.executemany(
            "INSERT INTO removed (rowid, generation) VALUES (?, ?)", ((r, generation) for r in rowids)
        )
        return len(rowids)

    def _insert(self, conn: sqlite3.Connection, row: _Row) -> None:
        doc = row.document
        vectors = np.ascontiguousarray(row.vectors, dtype="<f4")
        conn.executemany(
            "INSERT INTO chunks (id, source, title, headings, text, ordinal, vector) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                (
                    c.id,
                    doc.source,
                    c.title,
                    _HEADINGS_SEP.join(c.headings),
                    c.text,
                    c.ordinal,
                    vectors[i].tobytes(),
                )
                for i, c in enumerate(doc.chunks)
            ),
        )
        conn.execute(
            "INSERT INTO documents (source, title, digest, chunks) VALUES (?, ?, ?, ?)",
            (doc.source, doc.title, doc.digest, len(doc.chunks)),
        )

    # --- reading -------------------------------------------------------------------------------------------

    def _read(self) -> sqlite3.Connection | None:
        if self._reader is None:
            self._reader = self._connect(create=False)
        return self._reader

    def documents(self) -> list[DocumentInfo]:
        with self.read_lock:
            conn = self._read()
            if conn is None or not self._schema(conn):
                return []
            rows = conn.execute(
                "SELECT source, title, digest, chunks FROM documents ORDER BY source"
            ).fetchall()
        return [DocumentInfo(source=s, title=t, digest=d, chunks=n) for s, t, d, n in rows]

    def search(self, query: str, vector: Vector, k: int, alpha: float, candidates: int) -> list[Hit]:
        with self.read_lock:
            conn = self._read()
            if conn is None:
                return []
            conn.execute("BEGIN")
            try:
                if not self._schema(conn):
                    return []
                self._refresh(conn)
                vec = self.index.top(vector, candidates) if alpha > 0.0 else {}
                kw = self._keyword(conn, query, candidates) if alpha < 1.0 else {}
                ranked = relative_score_fusion(vec, kw, alpha)[:k]
                rowids = [r for r, _ in ranked]
                chunks = self._chunks(conn, rowids)
                sims = self.index.cosine_of(rowids, vector)
            finally:
                conn.execute("COMMIT")
        return [
            Hit(chunk=chunks[r], score=score, similarity=sim)
            for (r, score), sim in zip(ranked, sims, strict=True)
        ]

    def _schema(self, conn: sqlite3.Connection) -> bool:
        """False while another process is creating the file."""
        if not self._has_schema:
            try:
                self._has_schema = (
                    conn.execute("SELECT 1 FROM meta WHERE key = 'generation'").fetchone() is not None
                )
            except sqlite3.OperationalError:  # no such table
                self._has_schema = False
        return self._has_schema

    def _refresh(self, conn: sqlite3.Connection) -> None:
        """Bring the vector index to the file's generation (inside the caller's read transaction)."""
        meta = dict(conn.execute("SELECT key, value FROM meta WHERE key IN ('generation', 'log_floor')"))
        generation = int(meta["generation"])
        index = self.index
        if generation == index.generation:
            return
        if index.generation < 0:
            full = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            _check_embedder(self.path, full, self.embedder_name, self.dim)
        if index.generation < int(meta["log_floor"]):
            index.reset()
        else:
            index.remove(
                r
                for (r,) in conn.execute(
                    "SELECT rowid FROM removed WHERE generation > ?", (index.generation,)
                )
            )
        rows = conn.execute(
            "SELECT rowid, vector FROM chunks WHERE rowid > ? ORDER BY rowid", (index.max_rowid,)
        ).fetchall()
        if rows:
            rowids = np.fromiter((r for r, _ in rows), dtype=np.int64, count=len(rows))
            vectors = np.frombuffer(b"".join(v for _, v in rows), dtype="<f4").reshape(len(rows), self.dim)
            index.append(rowids, vectors.astype(np.float32))
        index.generation = generation
        logger.debug("vector index of %s at generation %d: %d rows", self.path.name, generation, index.size)

    def _keyword(self, conn: sqlite3.Connection, query: str, limit: int) -> dict[int, float]:
        terms = self._selective_terms(conn, query_terms(query))
        match = fts_query(terms)
        if match is None:
            return {}
        rows = conn.execute(
            "SELECT rowid, bm25(chunks_fts) FROM chunks_fts WHERE chunks_fts MATCH ? ORDER BY rank LIMIT ?",
            (match, limit),
        ).fetchall()
        return {int(r): -float(score) for r, score in rows}  # bm25(): lower is better

    def _selective_terms(self, conn: sqlite3.Connection, terms: list[str]) -> list[str]:
        """Ranking costs ~1.2 us per matching row: in a large knowledge base, leave out the terms found in more
        than ``COMMON_TERM_FRACTION`` of the chunks (their IDF is small) while rarer ones remain, and terms found
        nowhere. Document frequencies are counted once per generation (~0.1 ms a term)."""
        live = self.index.size - self.index.dead
        if len(terms) < 2 or live < COMMON_TERM_MIN_ROWS:
            return terms
        if self._df_generation != self.index.generation:
            self._df.clear()
            self._df_generation = self.index.generation
        for term in terms:
            if term not in self._df:
                if len(self._df) >= 4096:
                    self._df.clear()
                (count,) = conn.execute(
                    "SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH ?", (f'"{term}"',)
                ).fetchone()
                self._df[term] = int(count)
        present = [t for t in terms if self._df[t] > 0]
        cap = COMMON_TERM_FRACTION * live
        return [t for t in present if self._df[t] <= cap] or sorted(present, key=self._df.__getitem__)[:1]

    @staticmethod
    def _chunks(conn: sqlite3.Connection, rowids: Sequence[int]) -> dict[int, Chunk]:
        if not rowids:
            return {}
        marks = ",".join("?" * len(rowids))
        rows = conn.execute(
            f"SELECT rowid, id, source, title, headings, text, ordinal FROM chunks WHERE rowid IN ({marks})",
            list(rowids),
        ).fetchall()
        return {
            r: Chunk(
                id=i,
                source=s,
                title=t,
                headings=tuple(h.split(_HEADINGS_SEP)) if h else (),
                text=x,
                ordinal=o,
            )
            for r, i, s, t, h, x, o in rows
        }


def _check_embedder(path: Path, meta: dict[str, object], name: str, dim: int) -> None:
    stored_name, stored_dim = meta.get("embedder"), meta.get("dim")
    if stored_name != name or stored_dim != dim:
        raise EmbedderMismatchError(
            f"knowledge base {path.stem} was built with embedder {stored_name!r} ({stored_dim} dims), not "
            f"{name!r} ({dim} dims): search it with the same embedder, or ingest into another knowledge base "
            f"(or delete {path} and ingest again)"
        )


class EmbeddedStore:
    """The default ``KnowledgeStore``: SQLite FTS5 + numpy, under ``path`` (created on the first write)."""

    def __init__(
        self, path: str | os.PathLike[str], embedder_name: str, dim: int, *, candidates: int = 0
    ) -> None:
        self.path = Path(path)
        self.embedder_name = embedder_name
        self.dim = dim
        self.candidates = candidates  # per leg; 0 = max(4 k, 20)
        self._files: dict[str, _KbFile] = {}
        self._files_lock = threading.Lock()

    def _file(self, kb: str) -> _KbFile:
        with self._files_lock:
            kb_file = self._files.get(kb)
            if kb_file is None:
                kb_file = self._files[kb] = _KbFile(self.path / f"{kb}.sqlite", self.embedder_name, self.dim)
            return kb_file

    def _check_vectors(self, document: Document, vectors: Matrix) -> None:
        if vectors.shape != (len(document.chunks), self.dim):
            raise ValueError(
                f"{document.source}: {len(document.chunks)} chunks need vectors of shape "
                f"({len(document.chunks)}, {self.dim}), got {vectors.shape}"
            )
        if not np.all(np.isfinite(vectors)):
            raise ValueError(f"{document.source}: vectors must be finite")

    async def upsert(self, kb: str, document: Document, vectors: Matrix) -> None:
        await self.upsert_many(kb, [(document, vectors)])

    async def upsert_many(self, kb: str, items: Sequence[tuple[Document, Matrix]]) -> None:
        """Several documents in one transaction (bulk loads)."""
        _check_kb(kb)
        for document, vectors in items:
            self._check_vectors(document, vectors)
        rows = [_Row(document, vectors) for document, vectors in items]
        await asyncio.to_thread(self._write, kb, rows)

    def _write(self, kb: str, rows: Sequence[_Row], deletes: Sequence[str] = ()) -> int:
        self.path.mkdir(parents=True, exist_ok=True)
        return self._file(kb).write(rows, deletes)

    async def delete(self, kb: str, source: str) -> int:
        if not _valid_kb(kb) or not (self.path / f"{kb}.sqlite").exists():
            return 0
        return await asyncio.to_thread(self._write, kb, (), (source,))

    async def documents(self, kb: str) -> list[DocumentInfo]:
        if not _valid_kb(kb):
            return []
        return await asyncio.to_thread(self._file(kb).documents)

    async def search(self, kb: str, query: str, vector: Vector, *, k: int, alpha: float = 0.5) -> list[Hit]:
        if not _valid_kb(kb) or k <= 0:
            return []
        if vector.shape != (self.dim,):
            raise ValueError(f"query vector of shape {vector.shape}, want ({self.dim},)")
        candidates = self.candidates or max(4 * k, 20)
        alpha = min(max(alpha, 0.0), 1.0)
        return await asyncio.to_thread(self._file(kb).search, query, vector, k, alpha, max(candidates, k))

    async def knowledge_bases(self) -> list[str]:
        def scan() -> list[str]:
            if not self.path.is_dir():
                return []
            return sorted(p.stem for p in self.path.glob("*.sqlite") if _valid_kb(p.stem))

        return await asyncio.to_thread(scan)

    async def ready(self) -> bool:
        def check() -> bool:
            existing = next((p for p in (self.path, *self.path.parents) if p.exists()), None)
            return existing is not None and os.access(existing, os.R_OK | os.W_OK)

        return await asyncio.to_thread(check)

    async def aclose(self) -> None:
        with self._files_lock:
            files = list(self._files.values())
            self._files.clear()
        for kb_file in files:
            await asyncio.to_thread(kb_file.close)


def _valid_kb(kb: str) -> bool:
    return _KB_NAME.match(kb) is not None


def _check_kb(kb: str) -> None:
    if not _valid_kb(kb):
        raise ValueError(f"invalid knowledge base name {kb!r} (letters, digits, '_' and '-', at most 64)")
