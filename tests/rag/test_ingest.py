"""Ingest: files and folders into a knowledge base over an in-memory store; unchanged files skipped, changed files
replaced, deleted files pruned, bad files reported; the ``parley ingest`` command's exit codes and messages."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

from parley.rag.chunking import passage_text
from parley.rag.ingest import IngestArgumentError, ensure_samples, ingest, samples_dir
from parley.rag.types import Chunk, Document, DocumentInfo, Hit, Matrix, Vector


class WordHashEmbedder:
    """Bag of words hashed into 32 buckets, unit length; records every passage it embeds."""

    name = "test-words-32"
    dim = 32

    def __init__(self) -> None:
        self.passages: list[str] = []

    def _embed(self, texts: list[str]) -> Matrix:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                out[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dim] += 1.0
            out[row] /= max(float(np.linalg.norm(out[row])), 1e-9)
        return out

    def embed_queries(self, texts: list[str]) -> Matrix:
        return self._embed(texts)

    def embed_passages(self, texts: list[str]) -> Matrix:
        self.passages.extend(texts)
        return self._embed(texts)


class MemoryStore:
    """The ``KnowledgeStore`` contract in a dict, counting writes."""

    def __init__(self) -> None:
        self.kbs: dict[str, dict[str, tuple[Document, Matrix]]] = {}
        self.upserts = 0
        self.deletes = 0

    async def upsert(self, kb: str, document: Document, vectors: Matrix) -> None:
        assert vectors.shape[0] == len(document.chunks)
        self.upserts += 1
        self.kbs.setdefault(kb, {})[document.source] = (document, vectors)

    async def delete(self, kb: str, source: str) -> int:
        self.deletes += 1
        entry = self.kbs.get(kb, {}).pop(source, None)
        return len(entry[0].chunks) if entry else 0

    async def documents(self, kb: str) -> list[DocumentInfo]:
        return [
            DocumentInfo(d.source, d.title, d.digest, len(d.chunks))
            for d, _ in sorted(self.kbs.get(kb, {}).values(), key=lambda e: e[0].source)
        ]

    async def search(self, kb: str, query: str, vector: Vector, *, k: int, alpha: float = 0.5) -> list[Hit]:
        hits = [
            Hit(chunk, float(v @ vector), float(v @ vector))
            for document, vectors in self.kbs.get(kb, {}).values()
            for chunk, v in zip(document.chunks, vectors, strict=True)
        ]
        return sorted(hits, key=lambda h: -h.score)[:k]

    async def knowledge_bases(self) -> list[str]:
        return sorted(self.kbs)

    async def ready(self) -> bool:
        return True

    async def aclose(self) -> None:
        pass

    def chunks(self, kb: str, source: Path) -> list[Chunk]:
        return list(self.kbs[kb][str(source)][0].chunks)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    (root / ".hidden").mkdir()
    (root / "hatching.md").write_text("# Hatching\n\n## Chicken\n\nChicken eggs hatch in 21 days.\n")
    (root / "sub" / "rules.txt").write_text("House rules\n\nEggs are collected at 9:00.\n")
    (root / "sub" / "biosecurity.html").write_text(
        "<title>Biosecurity</title><h1>Boots</h1><p>Yellow boots.</p>"
    )
    (root / "sub" / "photo.md").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00binary")
    (root / "report.docx").write_bytes(b"PK\x03\x04")
    (root / "empty.txt").write_text("")
    (root / ".hidden" / "secret.md").write_text("# Secret\n\nNot ingested.\n")
    (root / ".notes.md").write_text("# Hidden file\n\nNot ingested either.\n")
    return root


async def test_a_folder_is_ingested_and_bad_files_are_skipped_with_reasons(folder: Path) -> None:
    store, embedder = MemoryStore(), WordHashEmbedder()
    report = await ingest([folder], kb="farm", store=store, embedder=embedder)
    assert sorted(Path(s).name for s in report.added) == ["biosecurity.html", "hatching.md", "rules.txt"]
    assert report.updated == report.unchanged == report.removed == []
    assert {p.path.name: p.reason for p in report.skipped} == {
        "photo.md": "binary file",
        "report.docx": "unsupported type .docx",
        "empty.txt": "empty file",
    }
    assert all(Path(d.source).is_absolute() for d in await store.documents("farm"))
    assert report.chunks_written == sum(d.chunks for d in await store.documents("farm")) == 3
    (chunk,) = store.chunks("farm", folder / "hatching.md")
    assert (chunk.title, chunk.headings, chunk.text) == (
        "Hatching",
        ("Chicken",),
        "Chicken eggs hatch in 21 days.",
    )
    assert passage_text(chunk) in embedder.passages  # embedded with the title and heading path in front
    assert "Hatching > Chicken: Chicken eggs hatch in 21 days." in embedder.passages
    summary = report.summary()
    assert "3 added, 0 updated, 0 unchanged, 0 removed; 3 chunks written, 3 files skipped" in summary
    assert "report.docx: unsupported type .docx" in summary


async def test_re_ingesting_unchanged_files_writes_nothing(folder: Path) -> None:
    store, embedder = MemoryStore(), WordHashEmbedder()
    await ingest([folder], kb="farm", store=store, embedder=embedder)
    upserts, embedded = store.upserts, len(embedder.passages)
    before = {s: [c.id for c in store.chunks("farm", Path(s))] for s in store.kbs["farm"]}
    again = await ingest([folder], kb="farm", store=store, embedder=embedder)
    assert (store.upserts, len(embedder.passages)) == (upserts, embedded)
    assert len(again.unchanged) == 3 and again.added == again.updated == [] and again.chunks_written == 0
    forced = await ingest([folder], kb="farm", store=store, embedder=embedder, force=True)
    assert len(forced.updated) == 3
    assert {
        s: [c.id for c in store.chunks("farm", Path(s))] for s in store.kbs["farm"]
    } == before  # stable ids


async def test_a_changed_file_replaces_its_chunks(folder: Path) -> None:
    store, embedder = MemoryStore(), WordHashEmbedder()
    await ingest([folder], kb="farm", store=store, embedder=embedder)
    path = folder / "hatching.md"
    old_ids = {c.id for c in store.chunks("farm", path)}
    path.write_text(
        "# Hatching\n\n## Duck\n\nDuck eggs hatch in 28 days.\n\n## Goose\n\nGoose eggs take 30 days.\n"
    )
    report = await ingest([path], kb="farm", store=store, embedder=embedder)
    assert report.updated == [str(path)] and report.added == [] and report.chunks_written == 2
    chunks = store.chunks("farm", path)
    assert [c.text for c in chunks] == ["Duck eggs hatch in 28 days.", "Goose eggs take 30 days."]
    assert not old_ids & {c.id for c in chunks}
    assert len(store.kbs["farm"]) == 3


async def test_prune_removes_documents_of_deleted_files_under_the_given_folders(
    folder: Path, tmp_path: Path
) -> None:
    store, embedder = MemoryStore(), WordHashEmbedder()
    elsewhere = tmp_path / "elsewhere.md"
    elsewhere.write_text("# Elsewhere\n\nAnother folder.\n")
    await ingest([folder, elsewhere], kb="farm", store=store, embedder=embedder)
    await ingest([folder], kb="other", store=store, embedder=embedder)
    (folder / "sub" / "rules.txt").unlink()
    elsewhere.unlink()

    kept = await ingest([folder], kb="farm", store=store, embedder=embedder)
    assert kept.removed == [] and len(store.kbs["farm"]) == 4  # without --prune nothing goes

    pruned = await ingest([folder], kb="farm", store=store, embedder=embedder, prune=True)
    assert pruned.removed == [str(folder / "sub" / "rules.txt")] and pruned.chunks_removed == 1
    assert str(elsewhere) in store.kbs["farm"]  # not under the given folder
    assert len(store.kbs["other"]) == 3  # another knowledge base is untouched
    assert "1 removed" in pruned.summary()


async def test_bad_arguments_raise_before_anything_is_done(folder: Path) -> None:
    store = MemoryStore()
    with pytest.raises(IngestArgumentError, match="no such file or directory"):
        await ingest([folder, folder / "missing"], kb="farm", store=store, embedder=WordHashEmbedder())
    with pytest.raises(IngestArgumentError, match="invalid knowledge-base name"):
        await ingest([folder], kb="../etc", store=store, embedder=WordHashEmbedder())
    assert store.upserts == 0


async def test_a_file_given_twice_or_inside_a_given_folder_is_ingested_once(folder: Path) -> None:
    store = MemoryStore()
    report = await ingest(
        [folder, folder / "hatching.md", folder], kb="farm", store=store, embedder=WordHashEmbedder()
    )
    assert len(report.added) == 3 and store.upserts == 3


async def test_ensure_samples_fills_an_empty_knowledge_base_once() -> None:
    folder = samples_dir()
    assert folder is not None and (folder / "hatching-times.md").is_file()
    store = MemoryStore()
    report = await ensure_samples(store, WordHashEmbedder(), "default")
    assert report is not None and report.skipped == []
    names = {Path(d.source).name for d in await store.documents("default")}
    assert {
        "hatching-times.md",
        "house-rules.txt",
        "diseases-and-biosecurity.html",
        "egg-storage.pdf",
    } <= names
    assert await ensure_samples(store, WordHashEmbedder(), "default") is None


# --- the command line ----------------------------------------------------------------------------------------


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`parley ingest` on an embedded store in a temporary directory, with the hashing embedder."""
    pytest.importorskip("parley.rag.stores")
    kb_dir = tmp_path / "kb"
    monkeypatch.setenv("PARLEY_KB_DIR", str(kb_dir))
    monkeypatch.setenv("PARLEY_LOG_JSON", "false")
    monkeypatch.setattr("parley.rag.stores.make_embedder", lambda settings: WordHashEmbedder())
    return kb_dir


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from parley.cli import main

    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_ingests_then_finds_everything_unchanged(
    folder: Path, cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(["ingest", str(folder), "--kb", "farm"], capsys)
    assert code == 0, err
    assert "knowledge base 'farm': 3 added, 0 updated, 0 unchanged, 0 removed" in out
    assert "photo.md: binary file" in out
    assert (cli_env / "farm.sqlite").is_file()
    code, out, _ = _run(["ingest", str(folder), "--kb", "farm", "--prune"], capsys)
    assert code == 0 and "0 added, 0 updated, 3 unchanged" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["/no/such/path"], "parley ingest: no such file or directory: /no/such/path\n"),
        (["{folder}", "--kb", "no spaces"], "parley ingest: invalid knowledge-base name 'no spaces'"),
    ],
)
def test_cli_bad_arguments_exit_2_with_one_line(
    folder: Path, cli_env: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, out, err = _run(["ingest", *(a.format(folder=folder) for a in args)], capsys)
    assert code == 2
    assert err.startswith(message) and err.count("\n") == 1 and "Traceback" not in err
    assert out == ""


def test_cli_with_nothing_usable_exits_1(
    tmp_path: Path, cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "only.docx").write_bytes(b"PK\x03\x04")
    code, out, err = _run(["ingest", str(tmp_path / "only.docx")], capsys)
    assert code == 1
    assert "only.docx: unsupported type .docx" in out
    assert err == "parley ingest: nothing ingested (no supported files with text)\n"
