"""One response, as protocol events: the GA envelope around the generated text and audio. Pure, no I/O.

Order for audio: ``response.created``, ``response.output_item.added``, ``conversation.item.added``,
``response.content_part.added``, then per phrase ``response.output_audio_transcript.delta`` (the phrase, sent with
its first audio) and ``response.output_audio.delta`` chunks, then ``response.output_audio.done``,
``response.output_audio_transcript.done``, ``response.content_part.done``, ``response.output_item.done``,
``conversation.item.done``, ``response.done``. Text-only uses ``response.output_text.delta/done`` instead.

The assistant item records, per phrase, the audio milliseconds it occupies (``Segment``) for truncation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from parley.errors import ParleyError
from parley.local.conversation import Conversation, Item, Segment, new_item
from parley.realtime import server_events as ev
from parley.realtime.audio import BYTES_PER_MS, WIRE_RATE, pcm_to_b64

Event = dict[str, Any]
Status = Literal["completed", "cancelled", "failed", "incomplete"]
AUDIO_DELTA_MAX_BYTES = 100 * BYTES_PER_MS  # re-chunk TTS output into deltas of at most 100 ms


@dataclass(frozen=True, slots=True)
class ResponseSpec:
    id: str
    instructions: str
    modalities: tuple[Literal["text", "audio"], ...]
    voice: str
    tts_voice: str | None  # None: the engine's default voice
    max_tokens: int
    max_output_tokens: int | Literal["inf"]
    conversation_id: str | None  # None: out-of-band (conversation "none"), the item is not kept
    input_items: tuple[Item, ...] | None = None
    metadata: dict[str, str] | None = None
    event_id: str | None = None
    trigger_item_id: str | None = None

    @property
    def audio(self) -> bool:
        return "audio" in self.modalities


class ResponseRun:
    def __init__(self, spec: ResponseSpec, conversation: Conversation) -> None:
        self.spec = spec
        self._conversation = conversation
        self.item: Item = new_item("assistant", "audio" if spec.audio else "text", status="in_progress")
        self._prev_id: str | None = None
        self._pending_phrase: str | None = None
        self._audio_bytes = 0
        self.output_tokens = 0
        self.finished = False

    # --- envelope -------------------------------------------------------------------------------------------

    def _ids(self) -> tuple[str, str, int, int]:
        return self.spec.id, self.item.id, 0, 0

    def _response(
        self, status: str, details: dict[str, Any] | None, output: list[dict[str, Any]]
    ) -> dict[str, Any]:
        s = self.spec
        return {
            "object": "realtime.response",
            "id": s.id,
            "status": status,
            "status_details": details,
            "output": output,
            "conversation_id": s.conversation_id,
            "output_modalities": list(s.modalities),
            "max_output_tokens": s.max_output_tokens,
            "audio": {"output": {"format": {"type": "audio/pcm", "rate": WIRE_RATE}, "voice": s.voice}},
            "usage": self._usage(),
            "metadata": s.metadata,
        }

    def _usage(self) -> dict[str, Any]:
        return {
            "total_tokens": self.output_tokens,
            "input_tokens": 0,
            "output_tokens": self.output_tokens,
            "input_token_details": {"text_tokens": 0, "audio_tokens": 0, "cached_tokens": 0},
            "output_token_details": {"text_tokens": self.output_tokens, "audio_tokens": 0},
        }

    def _part(self) -> dict[str, Any]:
        if self.spec.audio:
            return {"type": "audio", "transcript": self.item.kept_text()}
        return {"type": "text", "text": self.item.text}

    def start(self) -> list[Event]:
        rid, item_id, oi, ci = self._ids()
        out = [ev.response_created(self._response("in_progress", None, []))]
        out.append(ev.output_item_added(rid, oi, self.item.to_wire()))
        if self.spec.conversation_id is not None:
            self._prev_id = self._conversation.insert(self.item)
            out.append(ev.item_added(self.item.to_wire(), self._prev_id))
        empty = {"type": "audio", "transcript": ""} if self.spec.audio else {"type": "text", "text": ""}
        out.append(ev.content_part_added(rid, item_id, oi, ci, empty))
        return out

    # --- content --------------------------------------------------------------------------------------------

    def llm_delta(self, delta: str) -> list[Event]:
        """Count a token; in text mode also stream it out."""
        self.output_tokens += 1
        if self.spec.audio or not delta:
            return []
        self.item.text += delta
        rid, item_id, oi, ci = self._ids()
        return [ev.output_text_delta(rid, item_id, oi, ci, delta)]

    def begin_phrase(self, text: str) -> None:
        self._pending_phrase = text
        self.item.segments.append(Segment(self.item.audio_ms, self.item.audio_ms, text))

    def audio(self, pcm: bytes) -> list[Event]:
        """Audio of the current phrase. The phrase's transcript delta goes out with its first audio."""
        rid, item_id, oi, ci = self._ids()
        out = self._flush_phrase_text()
        for off in range(0, len(pcm), AUDIO_DELTA_MAX_BYTES):
            chunk = pcm[off : off + AUDIO_DELTA_MAX_BYTES]
            self._audio_bytes += len(chunk)
            out.append(ev.output_audio_delta(rid, item_id, oi, ci, pcm_to_b64(chunk)))
        self.item.audio_ms = self._audio_bytes // BYTES_PER_MS
        self.item.segments[-1].end_ms = self.item.audio_ms
        return out

    def end_phrase(self) -> list[Event]:
        return self._flush_phrase_text()

    def _flush_phrase_text(self) -> list[Event]:
        if self._pending_phrase is None:
            return []
        text, self._pending_phrase = self._pending_phrase, None
        delta = (" " if self.item.text else "") + text
        self.item.text += delta
        rid, item_id, oi, ci = self._ids()
        return [ev.output_audio_transcript_delta(rid, item_id, oi, ci, delta)]

    # --- end ------------------------------------------------------------------------------------------------

    def finish(
        self, status: Status, *, reason: str | None = None, error: ParleyError | None = None
    ) -> list[Event]:
        """The closing events, ``response.done`` last. A cancelled audio item keeps only the phrases whose audio
        went out."""
        self.finished = True
        rid, item_id, oi, ci = self._ids()
        out: list[Event] = []
        if self.spec.audio:
            if self._pending_phrase is not None:  # begun, but no audio went out: its text did not either
                self._pending_phrase = None
                self.item.segments.pop()
            out.append(ev.output_audio_done(rid, item_id, oi, ci))
            out.append(ev.output_audio_transcript_done(rid, item_id, oi, ci, self.item.kept_text()))
        else:
            out.append(ev.output_text_done(rid, item_id, oi, ci, self.item.text))
        out.append(ev.content_part_done(rid, item_id, oi, ci, self._part()))
        self.item.status = "completed" if status == "completed" else "incomplete"
        out.append(ev.output_item_done(rid, oi, self.item.to_wire()))
        if self.spec.conversation_id is not None and self._conversation.has(self.item.id):
            out.append(ev.item_done(self.item.to_wire(), self._conversation.previous_id(self.item.id)))
        details: dict[str, Any] | None = None
        if status in ("cancelled", "incomplete"):
            details = {"type": status, "reason": reason}
        elif status == "failed":
            err = error or ParleyError("response failed")
            details = {
                "type": "failed",
                "error": {"type": err.type, "code": err.code, "message": err.message},
            }
        out.append(ev.response_done(self._response(status, details, [self.item.to_wire()])))
        return out
