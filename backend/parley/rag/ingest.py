"""Files and folders -> a knowledge base: load, chunk, skip what is unchanged, embed, upsert (``parley ingest``).

A document's ``source`` is its absolute resolved path; its digest is the sha256 of the file's bytes, so a second
run over the same files embeds and writes nothing. ``prune`` removes the documents of the knowledge base whose file
is gone from under one of the given folders (or is one of the given files). A file that cannot be used is reported
with its reason and the run goes on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from parley.rag.chunking import DEFAULT_CONFIG, ChunkConfig, chunk_document, passage_text
from parley.rag.loaders import ParsedDocument, Skipped, load
from parley.rag.types import KB_NAME_PATTERN, DocumentInfo, Embedder, KnowledgeStore, Matrix

if TYPE_CHECKING:
    from parley.settings import Settings

logger = logging.getLogger(__name__)

EMBED_BATCH = 64  # passages embedded per call: bounds memory on a long document
PROGRESS_MIN_FILES = 10  # fewer files than this get no progress bar


class IngestArgumentError(ValueError):
    """A bad argument (a path that does not exist, an invalid knowledge-base name): nothing was done."""


@dataclass
class IngestReport:
    kb: str
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    chunks_written: int = 0
    chunks_removed: int = 0
    seconds: float = 0.0

    @property
    def processed(self) -> int:
        """Documents added, updated, found unchanged or removed: anything but skipped files."""
        return len(self.added) + len(self.updated) + len(self.unchanged) + len(self.removed)

    def summary(self, *, max_skipped: int = 20) -> str:
        lines = [
            f"knowledge base {self.kb!r}: {len(self.added)} added, {len(self.updated)} updated, "
            f"{len(self.unchanged)} unchanged, {len(self.removed)} removed; {self.chunks_written} chunks "
            f"written, {len(self.skipped)} {'file' if len(self.skipped) == 1 else 'files'} skipped "
            f"({self.seconds:.1f} s)"
        ]
        for item in self.skipped[:max_skipped]:
            lines.append(f"  skipped {item.path}: {item.reason}")
        if len(self.skipped) > max_skipped:
            lines.append(f"  ... and {len(self.skipped) - max_skipped} more skipped")
        return "\n".join(lines)


def check_kb_name(kb: str) -> None:
    if not re.fullmatch(KB_NAME_PATTERN, kb):
        raise IngestArgumentError(
            f"invalid knowledge-base name {kb!r} (letters, digits, '_' and '-', starting with a letter or "
            "digit, at most 64)"
        )


def resolve_paths(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    resolved = []
    for p in paths:
        path = Path(p).expanduser()
        if not path.exists():
            raise IngestArgumentError(f"no such file or directory: {p}")
        resolved.append(path.resolve())
    if not resolved:
        raise IngestArgumentError("no paths given")
    return resolved


def collect_files(roots: Sequence[Path]) -> list[Path]:
    """The files under ``roots`` (recursively, hidden folders and files left out), sorted, each once. A file
    named explicitly is taken even if hidden."""
    found: dict[Path, None] = {}
    for root in roots:
        if root.is_file():
            found[root] = None
            continue
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if not name.startswith("."):
                    found[Path(folder, name)] = None
    return list(found)


async def ingest(
    paths: Sequence[str | os.PathLike[str]],
    *,
    kb: str,
    store: KnowledgeStore,
    embedder: Embedder,
    prune: bool = False,
    force: bool = False,
    progress: bool = True,
    config: ChunkConfig = DEFAULT_CONFIG,
) -> IngestReport:
    """Ingest files and folders into ``kb``. ``force`` re-embeds files whose digest is unchanged (after a change
    of chunking). Raises ``IngestArgumentError`` before doing anything when a path or the name is bad."""
    check_kb_name(kb)
    roots = resolve_paths(paths)
    started = time.monotonic()
    report = IngestReport(kb=kb)
    files = await asyncio.to_thread(collect_files, roots)
    stored = {d.source: d for d in await store.documents(kb)}
    bar = _progress_bar(len(files), enabled=progress)
    try:
        for path in files:
            if bar is not None:
                bar.set_postfix_str(path.name[-40:], refresh=False)
            parsed = await asyncio.to_thread(load, path)
            if isinstance(parsed, Skipped):
                logger.debug("skipped %s: %s", path, parsed.reason)
                report.skipped.append(parsed)
            else:
                await _ingest_one(parsed, kb, store, embedder, stored, report, force=force, config=config)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    if prune:
        await _prune(roots, kb, store, stored, report)
    report.seconds = time.monotonic() - started
    logger.debug(
        "ingest into %s: %d added, %d updated, %d unchanged, %d removed, %d skipped, %d chunks in %.1f s",
        kb,
        len(report.added),
        len(report.updated),
        len(report.unchanged),
        len(report.removed),
        len(report.skipped),
        report.chunks_written,
        report.seconds,
    )
    return report


async def _ingest_one(
    parsed: ParsedDocument,
    kb: str,
    store: KnowledgeStore,
    embedder: Embedder,
    stored: dict[str, DocumentInfo],
    report: IngestReport,
    *,
    force: bool,
    config: ChunkConfig,
) -> None:
    source = str(parsed.path)
    previous = stored.get(source)
    if previous is not None and previous.digest == parsed.digest and not force:
        report.unchanged.append(source)
        return
    document = chunk_document(parsed, kb=kb, source=source, config=config)
    if not document.chunks:
        report.skipped.append(Skipped(parsed.path, "no text"))
        return
    texts = [passage_text(c) for c in document.chunks]
    vectors = await asyncio.to_thread(_embed, embedder, texts)
    await store.upsert(kb, document, vectors)
    (report.updated if previous is not None else report.added).append(source)
    report.chunks_written += len(document.chunks)
    logger.debug("ingested %s: %d chunks", source, len(document.chunks))


def _embed(embedder: Embedder, texts: list[str]) -> Matrix:
    parts = [embedder.embed_passages(texts[i : i + EMBED_BATCH]) for i in range(0, len(texts), EMBED_BATCH)]
    return np.concatenate(parts).astype(np.float32, copy=False)


async def _prune(
    roots: Sequence[Path],
    kb: str,
    store: KnowledgeStore,
    stored: dict[str, DocumentInfo],
    report: IngestReport,
) -> None:
    for source in await asyncio.to_thread(_gone, roots, sorted(stored)):
        report.chunks_removed += await store.delete(kb, source)
        report.removed.append(source)
        logger.debug("pruned %s", source)


def _gone(roots: Sequence[Path], sources: Sequence[str]) -> list[str]:
    """The sources under one of the folders in ``roots`` (or equal to a file in it) whose file no longer exists."""
    folders = [r for r in roots if r.is_dir()]
    files = {r for r in roots if not r.is_dir()}
    gone = []
    for source in sources:
        path = Path(source)
        covered = path in files or any(path.is_relative_to(f) for f in folders)
        if covered and not path.exists():
            gone.append(source)
    return gone


def _progress_bar(total: int, *, enabled: bool) -> Any:
    if not enabled or total < PROGRESS_MIN_FILES or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, file=sys.stderr, unit="file", desc="ingest", leave=False)


# --- the demo's sample knowledge base ------------------------------------------------------------------------


def samples_dir() -> Path | None:
    """rag/samples of the checkout (or of the working directory)."""
    for base in (Path(__file__).resolve().parents[3], Path.cwd()):
        candidate = base / "rag" / "samples"
        if candidate.is_dir():
            return candidate
    return None


def sample_paths(folder: Path, languages: Sequence[str] = ("en",)) -> list[Path]:
    """The sample documents in ``languages``: English ones are the files of rag/samples, French and German ones
    its ``fr/`` and ``de/`` folders (the same farm, for a multilingual embedder)."""
    paths = sorted(p for p in folder.iterdir() if p.is_file()) if "en" in languages else []
    return paths + [folder / lang for lang in languages if lang != "en" and (folder / lang).is_dir()]


async def ensure_samples(
    store: KnowledgeStore, embedder: Embedder, kb: str, *, languages: Sequence[str] = ("en",)
) -> IngestReport | None:
    """Ingest the sample documents in ``languages`` into ``kb`` when ``kb`` has no documents (``parley up``'s
    first start). None when the kb already has documents or the samples are not found."""
    if await store.documents(kb):
        return None
    folder = samples_dir()
    if folder is None:
        logger.warning("knowledge base %s is empty and rag/samples was not found", kb)
        return None
    paths = sample_paths(folder, languages)
    report = await ingest(paths, kb=kb, store=store, embedder=embedder, progress=False)
    logger.info("sample documents ingested into %s: %s", kb, report.summary().splitlines()[0])
    return report


# --- `parley ingest` -----------------------------------------------------------------------------------------


async def run_ingest_command(
    settings: Settings, paths: Sequence[str], *, kb: str | None, prune: bool, force: bool = False
) -> int:
    """The CLI: 0 when something was processed (or all unchanged), 1 when nothing could be, 2 for bad
    arguments. Errors are one line on stderr."""
    name = kb or settings.kb_default
    try:
        check_kb_name(name)
        resolve_paths(paths)
    except IngestArgumentError as exc:
        sys.stderr.write(f"parley ingest: {exc}\n")
        return 2
    from parley.rag.stores import make_embedder, make_store

    try:
        embedder = make_embedder(settings)
        store = make_store(settings)
    except Exception as exc:
        sys.stderr.write(f"parley ingest: cannot open the knowledge store: {exc}\n")
        return 1
    try:
        report = await ingest(paths, kb=name, store=store, embedder=embedder, prune=prune, force=force)
    except IngestArgumentError as exc:  # a path removed since the check above
        sys.stderr.write(f"parley ingest: {exc}\n")
        return 2
    except Exception as exc:
        logger.debug("ingest failed", exc_info=True)
        sys.stderr.write(f"parley ingest: {type(exc).__name__}: {exc}\n")
        return 1
    finally:
        await store.aclose()
    sys.stdout.write(report.summary() + "\n")
    if report.processed == 0:
        sys.stderr.write("parley ingest: nothing ingested (no supported files with text)\n")
        return 1
    return 0
