"""The conversation of one local voice session: ordered items, their wire shapes, and the LLM context they make.

Assistant audio items remember which text made which audio (``segments``), so ``truncate(audio_end_ms)`` keeps
exactly the words the user heard: whole phrases that ended before the cut, and of the phrase playing at the cut
the share of its words proportional to the share of its audio played.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from parley.errors import InvalidRequest
from parley.local.engines import Message
from parley.realtime.audio import BYTES_PER_MS, b64_to_pcm
from parley.realtime.events import FunctionCallItem, FunctionCallOutputItem, MessageItem
from parley.realtime.ids import new_id

Role = Literal["system", "user", "assistant"]
Kind = Literal["text", "audio", "function_call", "function_call_output"]


@dataclass(slots=True)
class Segment:
    start_ms: int
    end_ms: int
    text: str


@dataclass(slots=True)
class Item:
    id: str
    role: Role
    kind: Kind
    text: str = ""
    """User/system text, the assistant's full generated text, a function call's arguments or its output."""
    transcript: str | None = None
    """User audio: the transcript once known (None while pending). Unused for other items."""
    status: Literal["completed", "incomplete", "in_progress"] = "completed"
    segments: list[Segment] = field(default_factory=list)
    audio_ms: int = 0
    truncated_ms: int | None = None
    call_id: str = ""
    name: str = ""
    """Function calls: the function's name."""

    def kept_text(self) -> str:
        """The assistant text the user actually got: all of it, or what was heard before a truncation."""
        if self.kind != "audio" or self.truncated_ms is None:
            return self.text
        return heard_text(self.segments, self.truncated_ms)

    def llm_text(self) -> str:
        if self.role == "user" and self.kind == "audio":
            return self.transcript or ""
        return self.kept_text()

    def to_wire(self) -> dict[str, Any]:
        head = {"id": self.id, "object": "realtime.item", "type": self.kind, "status": self.status}
        if self.kind == "function_call":
            return {**head, "call_id": self.call_id, "name": self.name, "arguments": self.text}
        if self.kind == "function_call_output":
            return {**head, "call_id": self.call_id, "output": self.text}
        part: dict[str, Any]
        if self.role == "assistant":
            part = (
                {"type": "output_audio", "transcript": self.kept_text()}
                if self.kind == "audio"
                else {"type": "output_text", "text": self.text}
            )
        elif self.kind == "audio":
            part = {"type": "input_audio", "transcript": self.transcript}
        else:
            part = {"type": "input_text", "text": self.text}
        return {**head, "type": "message", "role": self.role, "content": [part]}


def heard_text(segments: list[Segment], cut_ms: int) -> str:
    words: list[str] = []
    for seg in segments:
        if seg.end_ms <= cut_ms:
            words.extend(seg.text.split())
        elif seg.start_ms < cut_ms:
            seg_words = seg.text.split()
            share = (cut_ms - seg.start_ms) / max(1, seg.end_ms - seg.start_ms)
            words.extend(seg_words[: int(len(seg_words) * share)])
            break
        else:
            break
    return " ".join(words)


class Conversation:
    def __init__(self) -> None:
        self._items: list[Item] = []

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Item]:
        return iter(self._items)

    def last_id(self) -> str | None:
        return self._items[-1].id if self._items else None

    def get(self, item_id: str, *, param: str = "item_id") -> Item:
        for item in self._items:
            if item.id == item_id:
                return item
        raise InvalidRequest(
            f"No item with id {item_id!r} in the conversation.", code="item_not_found", param=param
        )

    def has(self, item_id: str) -> bool:
        return any(i.id == item_id for i in self._items)

    def previous_id(self, item_id: str) -> str | None:
        for i, item in enumerate(self._items):
            if item.id == item_id:
                return self._items[i - 1].id if i else None
        return None

    def insert(self, item: Item, previous_item_id: str | None = None) -> str | None:
        """Add ``item`` after ``previous_item_id`` (None: at the end; ``"root"``: first). Returns its predecessor."""
        if self.has(item.id):
            raise InvalidRequest(
                f"An item with id {item.id!r} already exists.", code="invalid_value", param="item.id"
            )
        if previous_item_id is None:
            pos = len(self._items)
        elif previous_item_id == "root":
            pos = 0
        else:
            prev = self.get(previous_item_id, param="previous_item_id")
            pos = self._items.index(prev) + 1
        self._items.insert(pos, item)
        return self._items[pos - 1].id if pos else None

    def delete(self, item_id: str) -> None:
        self._items.remove(self.get(item_id))

    def items_after(self, item_id: str) -> list[Item]:
        for i, item in enumerate(self._items):
            if item.id == item_id:
                return self._items[i + 1 :]
        return []

    def llm_messages(
        self,
        instructions: str,
        items: list[Item] | None = None,
        *,
        pending: Mapping[str, str] | None = None,
    ) -> list[Message]:
        """Chat messages for the LLM: the instructions, then each item's text (user audio by its transcript,
        assistant audio by the text the user heard). Empty texts are left out. ``pending`` stands in a text for
        items by id (a committed user turn whose transcript is not final yet), in their place. Function calls join
        the assistant message before them (or make one) as ``tool_calls``; their outputs are ``tool`` messages."""
        messages: list[Message] = [{"role": "system", "content": instructions}] if instructions else []
        for item in self._items if items is None else items:
            if item.kind == "function_call":
                call = {
                    "id": item.call_id,
                    "type": "function",
                    "function": {"name": item.name, "arguments": item.text},
                }
                last = messages[-1] if messages else None
                if last is not None and last["role"] == "assistant":
                    last.setdefault("tool_calls", []).append(call)
                else:
                    messages.append(
                        {"role": "assistant", "tool_calls": [call]}
                    )  # no content (llama.cpp refuses null)
                continue
            if item.kind == "function_call_output":
                messages.append({"role": "tool", "tool_call_id": item.call_id, "content": item.text})
                continue
            text = (pending[item.id] if pending and item.id in pending else item.llm_text()).strip()
            if text:
                messages.append({"role": item.role, "content": text})
        return messages


def new_item(role: Role, kind: Kind, *, item_id: str | None = None, **kw: Any) -> Item:
    return Item(id=item_id or new_id("item"), role=role, kind=kind, **kw)


def item_from_wire(
    m: MessageItem | FunctionCallItem | FunctionCallOutputItem, param: str
) -> tuple[Item, bytes | None]:
    """A conversation item from a client item; also the audio to transcribe when a message carries audio only."""
    if isinstance(m, FunctionCallItem):
        call = new_item("assistant", "function_call", item_id=m.id, text=m.arguments, name=m.name)
        call.call_id = m.call_id or new_id("call")
        return call, None
    if isinstance(m, FunctionCallOutputItem):
        return new_item("user", "function_call_output", item_id=m.id, text=m.output, call_id=m.call_id), None
    allowed = {
        "system": {"input_text", "text"},
        "user": {"input_text", "text", "input_audio"},
        "assistant": {"output_text", "text", "output_audio", "audio"},
    }[m.role]
    texts: list[str] = []
    audio: bytes | None = None
    kind = "text"
    for n, part in enumerate(m.content):
        if part.type not in allowed:
            raise InvalidRequest(
                f"A {m.role} message cannot hold {part.type} content.",
                code="invalid_value",
                param=f"{param}.content.{n}.type",
            )
        if part.type in ("input_audio", "output_audio", "audio"):
            kind = "audio"
            if part.transcript is not None:
                texts.append(part.transcript)
            elif part.audio and m.role == "user":
                try:
                    audio = b64_to_pcm(part.audio)
                except ValueError:
                    raise InvalidRequest(
                        "audio is not valid base64.", code="invalid_value", param=f"{param}.content.{n}.audio"
                    ) from None
        else:
            texts.append(part.text or "")
    text = " ".join(t for t in texts if t)
    item = new_item(m.role, "audio" if kind == "audio" else "text", item_id=m.id)
    if m.role == "user" and kind == "audio":
        item.transcript = None if audio is not None and not texts else text
        item.audio_ms = len(audio or b"") // BYTES_PER_MS
    else:
        item.text = text
    return item, audio
