"""Speech to text with faster-whisper (CTranslate2), run on one dedicated worker thread.

``PARLEY_STT_MODEL`` (or the ``model`` argument) is a packaged model's name (``parley.speech_models``: ``tiny.en``,
the default, English only; ``base``, multilingual, joined once from its two packages into the model cache) or a
faster-whisper model directory. Nothing is downloaded at run time (``HF_HUB_OFFLINE=1``).

Speed: Whisper pads every clip to a 30 s encoder window. For utterances shorter than 29 s the encoder here sees the
speech plus 1 s, at least ``PARLEY_STT_WINDOW_MIN_S`` (10 s; 30 = the standard path): tiny.en takes ~75 ms instead of
~330 ms for a 3 s clip on 2 cores; what it costs in accuracy per language is in docs/benchmarks.md (``parley bench
stt``).
"""

from __future__ import annotations

import asyncio
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from parley import speech_models
from parley.errors import STTFailed
from parley.realtime.audio import WIRE_RATE, pcm16_to_float, resample
from parley.settings import Settings

logger = logging.getLogger(__name__)

MODEL_RATE = 16_000
MIN_AUDIO_MS = 100  # shorter input is returned as "" without running the model
WHISPER_WINDOW_S = 30
MAX_PROMPT_TOKENS = 223  # faster-whisper's limit for the previous-text prompt (max_length 448 // 2 - 1)


def assemble_multilingual_base(dest_dir: str | Path | None = None) -> Path:
    """The multilingual Whisper base model's directory, joined from its packages once (checked by sha256).

    ``dest_dir`` is the model cache (default ``~/.cache/parley/models``); the model lands in a folder inside it.
    Raises ``parley.llm_models.ModelUnavailable`` (naming what to install) when the packages are missing."""
    return speech_models.MODELS[speech_models.MULTILINGUAL].model_dir(
        Path(dest_dir) if dest_dir is not None else None
    )


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
    return collapse_repeats(str(tokenizer.decode(result[0].sequences_ids[0])).strip())


_SENTENCE = re.compile(r"[^.!?]+[.!?]*")


def collapse_repeats(text: str) -> str:
    """Drop a sentence that repeats the one before it ("Press 0 for options. Press 0 for options. ...").

    The short window's one failure seen in ``parley bench stt``: on a 7.6 s prompt tiny.en said its last sentence
    five times, until the output cap. A person saying the same sentence twice in a row loses nothing by it."""
    kept: list[str] = []
    for sentence in _SENTENCE.findall(text):
        if not kept or sentence.strip().lower() != kept[-1].strip().lower():
            kept.append(sentence)
    return "".join(kept).strip()


class FasterWhisperSTT:
    """``SpeechToText`` with faster-whisper. The model loads on the worker thread at the first call (or warmup)."""

    def __init__(self, settings: Settings, *, model: str | None = None) -> None:
        self._settings = settings
        self._model_value = settings.stt_model if model is None else model
        self._model: Any = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parley-stt")
        self._closed = False

    @property
    def model_ref(self) -> str:
        """The model's name in ``parley.speech_models`` or its directory, as configured."""
        return self._model_value or speech_models.DEFAULT

    @property
    def model_name(self) -> str:
        """What the session echoes as ``transcription.model``: faster-whisper and the model's name or folder."""
        found = speech_models.resolve(self._model_value)
        return "faster-whisper/" + (found.name if not isinstance(found, Path) else Path(self.model_ref).name)

    @property
    def multilingual(self) -> bool | None:
        """Whether the model hears more than English (None: a directory, not known before it loads)."""
        found = speech_models.resolve(self._model_value)
        return None if isinstance(found, Path) else found.multilingual

    def _load(self) -> Any:
        if self._model is None:
            from faster_whisper import WhisperModel

            s = self._settings
            try:
                self._model = WhisperModel(
                    str(speech_models.model_dir(self._model_value)),
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

    def transcribe_audio(self, audio: np.ndarray, language: str | None, prompt: str | None = None) -> str:
        """Transcribe float32 16 kHz audio on the calling thread (blocking; for benchmarks and tools)."""
        return self._run(audio, language, prompt)

    async def transcribe(self, pcm: bytes, *, language: str | None = None, prompt: str | None = None) -> str:
        if len(pcm) // 2 < WIRE_RATE * MIN_AUDIO_MS // 1000:
            return ""
        audio = resample(pcm16_to_float(pcm[: len(pcm) // 2 * 2]), WIRE_RATE, MODEL_RATE)
        lang = language if language is not None else self._settings.language
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
