"""One response, as protocol events: the GA envelope around the generated text and audio. Pure, no I/O.

Order for audio: ``response.created``, ``response.output_item.added``, ``conversation.item.added``,
``response.content_part.added``, then per phrase ``response.output_audio_transcript.delta`` (the phrase, sent with
its first audio) and ``response.output_audio.delta`` chunks, then ``response.output_audio.done``,
``response.output_audio_transcript.done``, ``response.content_part.done``, ``response.output_item.done``,
``conversation.item.done``, ``response.done``. Text-only uses ``response.output_text.delta/done`` instead.

With tools offered, the message item is opened at the first text only (an answer that only calls a tool has no
message), and each streamed tool call becomes a ``function_call`` item after it: ``response.output_item.added``,
``conversation.item.added``, ``response.function_call_arguments.delta``..., and when the response ends
``response.function_call_arguments.done``, ``response.output_item.done``, ``conversation.item.done``.

The assistant item records, per phrase, the audio milliseconds it occupies (``Segment``) for truncation.
``usage`` in ``response.done`` is what the LLM server reported (``LLMEnd``); a count it did not report is null,
except output tokens, then counted as streamed deltas.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from parley.errors import ParleyError
from parley.local.conversation import Conversation, Item, Segment, new_item
from parley.local.engines import LLMEnd, ToolCallDelta
from parley.local.languages import answer_instruction
from parley.local.tools import Tools
from parley.realtime import server_events as ev
from parley.realtime.audio import BYTES_PER_MS, WIRE_RATE, pcm_to_b64
from parley.realtime.ids import new_id

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
    tools: Tools = Tools()
    speed: float = 1.0
    language: str = "en"

    @property
    def audio(self) -> bool:
        return "audio" in self.modalities

    @property
    def llm_instructions(self) -> str:
        """The system message: the instructions, then the line telling the LLM the session's language."""
        return f"{self.instructions}\n\n{answer_instruction(self.language)}".strip()


class ResponseRun:
    def __init__(self, spec: ResponseSpec, conversation: Conversation) -> None:
        self.spec = spec
        self._conversation = conversation
        self.item: Item = new_item("assistant", "audio" if spec.audio else "text", status="in_progress")
        self._outputs: list[Item] = []  # in output_index order
        self._calls: dict[int, Item] = {}  # streamed tool calls by the server's index
        self._pending_phrase: str | None = None
        self._audio_bytes = 0
        self.output_tokens = 0
        self.end: LLMEnd | None = None
        self.finished = False

    # --- envelope -------------------------------------------------------------------------------------------

    def _ids(self) -> tuple[str, str, int, int]:
        return self.spec.id, self.item.id, self._outputs.index(self.item), 0

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
        end = self.end
        given = end is not None and end.output_tokens is not None
        out = end.output_tokens if end is not None and end.output_tokens is not None else self.output_tokens
        inp = end.input_tokens if end is not None else None
        cached = end.cached_tokens if end is not None else None
        return {
            "total_tokens": inp + out if inp is not None and given else None,
            "input_tokens": inp,
            "output_tokens": out,
            "input_token_details": {"text_tokens": inp, "audio_tokens": 0, "cached_tokens": cached},
            "output_token_details": {"text_tokens": out, "audio_tokens": 0},
        }

    def _part(self) -> dict[str, Any]:
        if self.spec.audio:
            return {"type": "audio", "transcript": self.item.kept_text()}
        return {"type": "text", "text": self.item.text}

    def start(self) -> list[Event]:
        out = [ev.response_created(self._response("in_progress", None, []))]
        if not self.spec.tools.tooling().tools:
            out += self._open_message()  # without tools the answer is a message: open it at once
        return out

    def _open(self, item: Item) -> list[Event]:
        self._outputs.append(item)
        out = [ev.output_item_added(self.spec.id, len(self._outputs) - 1, item.to_wire())]
        if self.spec.conversation_id is not None:
            prev = self._conversation.insert(item)
            out.append(ev.item_added(item.to_wire(), prev))
        return out

    def _open_message(self) -> list[Event]:
        if self.item in self._outputs:
            return []
        out = self._open(self.item)
        rid, item_id, oi, ci = self._ids()
        empty = {"type": "audio", "transcript": ""} if self.spec.audio else {"type": "text", "text": ""}
        out.append(ev.content_part_added(rid, item_id, oi, ci, empty))
        return out

    # --- content --------------------------------------------------------------------------------------------

    def llm_delta(self, delta: str) -> list[Event]:
        """Count a token; open the message at the first text; in text mode also stream it out."""
        self.output_tokens += 1
        if not delta:
            return []
        out = self._open_message()
        if self.spec.audio:
            return out
        self.item.text += delta
        rid, item_id, oi, ci = self._ids()
        return [*out, ev.output_text_delta(rid, item_id, oi, ci, delta)]

    def tool_delta(self, d: ToolCallDelta) -> list[Event]:
        """A piece of a streamed tool call: its item is opened with the first piece, then its arguments grow."""
        out: list[Event] = []
        call = self._calls.get(d.index)
        if call is None:
            self.output_tokens += 1
            call = new_item("assistant", "function_call", status="in_progress", name=d.name or "")
            call.call_id = d.call_id or new_id("call")
            self._calls[d.index] = call
            out += self._open(call)
        elif d.name and not call.name:
            call.name = d.name
        if d.arguments:
            self.output_tokens += 1
            call.text += d.arguments
            oi = self._outputs.index(call)
            out.append(ev.function_call_arguments_delta(self.spec.id, call.id, oi, call.call_id, d.arguments))
        return out

    def llm_end(self, end: LLMEnd) -> None:
        self.end = end

    def hit_token_cap(self) -> bool:
        if self.end is not None and self.end.finish_reason is not None:
            return self.end.finish_reason == "length"
        return self.output_tokens >= self.spec.max_tokens

    def begin_phrase(self, text: str) -> None:
        self._pending_phrase = text
        self.item.segments.append(Segment(self.item.audio_ms, self.item.audio_ms, text))

    def audio(self, pcm: bytes) -> list[Event]:
        """Audio of the current phrase. The phrase's transcript delta goes out with its first audio."""
        out = self._open_message() + self._flush_phrase_text()
        rid, item_id, oi, ci = self._ids()
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
        item_status: Literal["completed", "incomplete"] = (
            "completed" if status == "completed" else "incomplete"
        )
        out: list[Event] = []
        for item in self._outputs:
            item.status = item_status
            out += self._close_message() if item is self.item else self._close_call(item)
            if self.spec.conversation_id is not None and self._conversation.has(item.id):
                out.append(ev.item_done(item.to_wire(), self._conversation.previous_id(item.id)))
        details: dict[str, Any] | None = None
        if status in ("cancelled", "incomplete"):
            details = {"type": status, "reason": reason}
        elif status == "failed":
            err = error or ParleyError("response failed")
            details = {
                "type": "failed",
                "error": {"type": err.type, "code": err.code, "message": err.message},
            }
        output = [item.to_wire() for item in self._outputs]
        out.append(ev.response_done(self._response(status, details, output)))
        return out

    def _close_message(self) -> list[Event]:
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
        out.append(ev.output_item_done(rid, oi, self.item.to_wire()))
        return out

    def _close_call(self, call: Item) -> list[Event]:
        oi = self._outputs.index(call)
        return [
            ev.function_call_arguments_done(self.spec.id, call.id, oi, call.call_id, call.name, call.text),
            ev.output_item_done(self.spec.id, oi, call.to_wire()),
        ]
