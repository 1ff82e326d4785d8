"""The streaming half shared by every text-to-speech engine: a blocking synthesizer on worker threads, its audio
handed to the event loop as PCM16 24 kHz pieces through a bounded queue.

A subclass says how to make audio (``_speak``: call ``emit`` with float32 24 kHz arrays, as they are made, until it
returns False) and which voices it has (``voices``, ``resolve_voice``). ``synthesize`` runs ``_speak`` on a worker
that cuts the audio into pieces of at most ``CHUNK_MS``. The worker waits while the queue is full and checks a stop
flag between pieces: when the consumer stops (breaks, is cancelled, or closes the generator) the worker ends at its
next piece, without feeding anyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from parley.errors import TTSFailed
from parley.realtime.audio import WIRE_RATE, float_to_pcm16

logger = logging.getLogger(__name__)

CHUNK_MS = 200
QUEUE_CHUNKS = 16  # about 3 s of audio may wait for the consumer; then the worker waits
WORKERS = 2  # concurrent syntheses across sessions
_POLL_S = 0.05

Emit = Callable[[np.ndarray], bool]
"""Hand over float32 24 kHz audio; False means stop (the consumer left or the engine is closing)."""


class ThreadedTTS(ABC):
    """``TextToSpeech`` around a blocking synthesizer. ``close`` stops it; ``active_jobs`` counts running workers."""

    engine = "tts"  # a short name for logs and errors

    def __init__(self, *, workers: int = WORKERS) -> None:
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"parley-{self.engine}")
        self._active = 0
        self._closing = threading.Event()
        self._active_lock = threading.Lock()

    @property
    def active_jobs(self) -> int:
        """Worker jobs still running (0 once every stream has ended or been stopped)."""
        return self._active

    @abstractmethod
    def voices(self) -> Sequence[str]: ...

    @abstractmethod
    def resolve_voice(self, voice: str | None) -> str:
        """The voice that will speak for a requested name (a fallback rather than an error)."""

    @abstractmethod
    def _speak(self, text: str, voice: str, speed: float, emit: Emit) -> None:
        """Worker side: make the audio of ``text`` and ``emit`` it (blocking). Raise ``TTSFailed`` on failure."""

    async def warmup(self, voice: str | None = None) -> None:
        async for _ in self.synthesize("Hello.", voice=voice):
            pass

    async def synthesize(
        self, text: str, *, voice: str | None = None, speed: float = 1.0, language: str | None = None
    ) -> AsyncGenerator[bytes, None]:
        """``language`` is not checked here: ``tts_router.LanguageTTS`` picks the engine that speaks it."""
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
                logger.exception("%s failed", self.engine)
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

        piece = WIRE_RATE * CHUNK_MS // 1000

        def emit(audio: np.ndarray) -> bool:
            for i in range(0, audio.size, piece):
                while not slots.acquire(timeout=_POLL_S):
                    if stopped():
                        return False
                if stopped():
                    return False
                put(float_to_pcm16(audio[i : i + piece]))
            return not stopped()

        self._speak(text, name, speed, emit)
        return not stopped()

    def close(self) -> None:
        """Stop accepting work and wait for running workers (each stops at its next stop-flag check)."""
        self._closing.set()
        self._executor.shutdown(wait=True, cancel_futures=True)
