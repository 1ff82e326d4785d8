"""What the user and the assistant said in a session, as the relay saw it, and the events that replay it into a new
upstream's conversation when the first one died. Pure: ``RelaySession`` feeds it and sends what it returns.

Recorded: each user turn (its final transcript, or a typed text item) and each answer (its transcript deltas or
text). An answer the user interrupted is kept only as far as it was heard: ``conversation.item.truncate`` says how
many milliseconds of its audio were played, and the answer keeps that share of its words (audio length is counted
from the audio deltas as they pass). The relay's own context items are not recorded (the next turn writes a fresh
one), nor is anything after ``max_items``/``max_chars`` (the oldest go first).

Replayed as text items (``conversation.item.create``: user ``input_text``, assistant ``output_text``), with ids the
relay recognises (``REPLAY_PREFIX``) so the new upstream's acknowledgements never reach the client, who already has
these items.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

from parley.realtime.audio import BYTES_PER_MS
from parley.relay import wire

REPLAY_PREFIX = "parley_replay_"
EVENT_PREFIX = "parley_replay_evt_"
# upstream events that say what the answer is (``HeardLog.on_answer_event``)
ANSWER_EVENTS = (
    "response.output_item.added",
    "response.output_audio_transcript.delta",
    "response.output_text.delta",
    "response.output_audio_transcript.done",
    "response.output_text.done",
)


@dataclass(slots=True)
class Said:
    role: Literal["user", "assistant"]
    text: str
    item_id: str | None = None
    response_id: str | None = None
    audio_ms: float = 0.0  # assistant audio passed to the client so far
    heard_ms: int | None = None  # set by a truncate: the user heard this much of the audio

    def heard_text(self) -> str:
        text = self.text.strip()
        if self.heard_ms is None or self.audio_ms <= 0:
            return text
        words = text.split()
        share = min(1.0, self.heard_ms / self.audio_ms)
        return " ".join(words[: round(len(words) * share)])


def audio_ms_of_delta(frame: str) -> float:
    """Milliseconds of PCM16 24 kHz audio in a ``response.output_audio.delta`` frame, without parsing it: the
    base64 is the last string when ``delta`` is the last key (as OpenAI and Parley's server write it). A frame laid
    out otherwise counts as 0 (its answer is then kept whole)."""
    if not frame.endswith('"}'):
        return 0.0
    start = frame.rfind('"', 0, len(frame) - 2)
    if start < 0 or not frame.endswith('"delta":"', 0, start + 1):
        return 0.0
    b64 = len(frame) - 2 - (start + 1)
    return b64 * 3 / 4 / BYTES_PER_MS


class HeardLog:
    def __init__(self, *, max_items: int = 40, max_chars: int = 8000) -> None:
        self._items: deque[Said] = deque(maxlen=max_items)
        self.max_chars = max_chars
        self._answer: Said | None = None  # the answer being spoken

    # --- recording ----------------------------------------------------------------------------------------

    def user(self, text: str, item_id: str | None = None) -> None:
        if text.strip():
            self._items.append(Said("user", text.strip(), item_id))

    def answer_started(self, response_id: str | None) -> None:
        self._answer = Said("assistant", "", response_id=response_id)
        self._items.append(self._answer)

    def answer_item(self, item_id: str) -> None:
        if self._answer is not None and self._answer.item_id is None:
            self._answer.item_id = item_id

    def answer_text(self, delta: str, item_id: str | None = None) -> None:
        if self._answer is not None:
            if item_id:
                self.answer_item(item_id)
            self._answer.text += delta

    def answer_done_text(self, text: str, item_id: str | None = None) -> None:
        """The whole text of the answer (a ``.done`` event): replaces what the deltas made."""
        if self._answer is not None and text:
            if item_id:
                self.answer_item(item_id)
            self._answer.text = text

    def on_answer_event(self, ev: dict[str, Any]) -> None:
        """One of ``ANSWER_EVENTS``."""
        type_ = ev.get("type")
        item = ev.get("item")
        item_id = item.get("id") if isinstance(item, dict) else ev.get("item_id")
        item_id = item_id if isinstance(item_id, str) else None
        if type_ == "response.output_item.added":
            if item_id:
                self.answer_item(item_id)
        elif isinstance(ev.get("delta"), str):
            self.answer_text(ev["delta"], item_id)
        else:
            whole = ev.get("transcript", ev.get("text"))
            if isinstance(whole, str):
                self.answer_done_text(whole, item_id)

    def answer_audio(self, ms: float) -> None:
        if self._answer is not None:
            self._answer.audio_ms += ms

    def answer_ended(self) -> None:
        self._answer = None

    def truncated(self, item_id: str, audio_end_ms: int) -> None:
        """The client heard ``audio_end_ms`` of the answer ``item_id`` (the latest answer when the id is unknown)."""
        answers = [s for s in self._items if s.role == "assistant"]
        said = next((s for s in reversed(answers) if s.item_id == item_id), None)
        if said is None and answers and answers[-1].item_id is None:
            said = answers[-1]
        if said is not None:
            said.heard_ms = audio_end_ms

    # --- replay -------------------------------------------------------------------------------------------

    def heard(self) -> list[tuple[str, str]]:
        """(role, text) of what was said and heard, oldest first, within ``max_chars`` (newest kept)."""
        out: list[tuple[str, str]] = []
        total = 0
        for said in reversed(self._items):
            text = said.heard_text()
            if not text:
                continue
            total += len(text)
            if total > self.max_chars:
                break
            out.append((said.role, text))
        out.reverse()
        return out


def replay_events(heard: list[tuple[str, str]]) -> list[str]:
    """``conversation.item.create`` events that put ``heard`` into a fresh upstream conversation, in order."""
    events = []
    for n, (role, text) in enumerate(heard, 1):
        part = {"type": "input_text" if role == "user" else "output_text", "text": text}
        item = {"id": f"{REPLAY_PREFIX}{n}", "type": "message", "role": role, "content": [part]}
        events.append(wire.client_event_id("conversation.item.create", EVENT_PREFIX, item=item))
    return events


def response_failed(response_id: str | None, code: str) -> str:
    """``response.done`` with status failed, for an answer whose upstream died before it finished."""
    details = {"type": "failed", "error": {"type": "server_error", "code": code}}
    response: dict[str, Any] = {
        "id": response_id,
        "status": "failed",
        "status_details": details,
        "output": [],
    }
    return wire.client_event("response.done", response=response)


def owns(item_id: object) -> bool:
    return isinstance(item_id, str) and item_id.startswith(REPLAY_PREFIX)


def owns_event(event_id: object) -> bool:
    return isinstance(event_id, str) and event_id.startswith(EVENT_PREFIX)
