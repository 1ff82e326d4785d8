"""Property-based fuzzing of the local voice server's client-event handling.

Two layers: the pure one (``parse_client_event`` then ``SessionState.handle``: no I/O), and a whole
``LocalSession`` in-process (its real reader: size limit, parse, ``event_id`` recovery, handle, the writer's
serialisation) with fake engines, fed through queues (``tests/local/session_fakes``).

Properties: no exception escapes (and nothing is logged at ERROR: the reader logs a handler's bug and goes on);
a malformed frame gets exactly one ``error`` event (GA shape) and any frame at most one; the session stays open
(a sentinel request sent after each frame is answered); every frame written is strict JSON, UTF-8 encodable, and a
valid event of the stock SDK's models (the harness checks that).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

from fuzz_checks import FUZZ, FUZZ_SLOW, check_error_event, sendable
from fuzz_frames import DataPicker, frame
from hypothesis import event as tally
from hypothesis import given
from hypothesis import strategies as st
from session_fakes import Harness, running

from parley.errors import InvalidRequest
from parley.local.protocol import LocalProtocol as SessionState
from parley.realtime.events import parse_client_event

LIMIT = 65_536


def _vad(params: Any) -> Any:
    from session_fakes import EnergyVad

    return EnergyVad(params)


@FUZZ
@given(st.data())
def test_pure_parse_and_handle_never_raise(data: st.DataObject) -> None:
    pick = DataPicker(data)
    state = SessionState(vad_factory=_vad, voices=["en_US-joe-medium"])
    for _ in range(data.draw(st.integers(1, 5))):
        f = frame(pick, LIMIT, raw=True)
        tally(f.category)
        if len(f.data) > LIMIT:
            continue  # refused by size before parsing (the session test covers it)
        try:
            event = parse_client_event(f.data)
        except InvalidRequest as err:
            assert err.code in ("invalid_json", "unknown_event", "invalid_value"), err.code
            continue
        assert f.local != "refuse", f"{f.category} parsed: {event!r:.200}"
        for out in state.handle(event):
            if isinstance(out, dict):
                sendable(json.dumps(out))
                if out["type"] == "error":
                    check_error_event(out)


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def error_logs() -> Iterator[_Errors]:
    handler = _Errors()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


@contextlib.asynccontextmanager
async def local_session() -> AsyncIterator[Harness]:
    """The session harness (fake engines), with every frame the session writes checked as it is sent."""
    async with running(max_event_bytes=LIMIT) as h:
        send = h.session._send

        async def checked(text: str) -> None:
            sendable(text)
            await send(text)

        h.session._send = checked
        yield h


async def send_raw(h: Harness, data: str | bytes) -> None:
    """A frame as it is, text or bytes (``Harness.send`` serialises events)."""
    await h._inbox.put(data)  # type: ignore[arg-type]


@FUZZ_SLOW
@given(st.data())
async def test_local_session_answers_each_bad_frame_once_and_stays_open(data: st.DataObject) -> None:
    pick = DataPicker(data)
    with error_logs() as logged:
        async with local_session() as h:
            for _ in range(data.draw(st.integers(1, 6))):
                f = frame(pick, LIMIT)
                tally(f.category)
                await send_raw(h, f.data)
                got = await h.settle()  # the sentinel is answered: the session still reads
                errors = [check_error_event(e) for e in got if e["type"] == "error"]
                assert len(errors) <= 1, (f.category, errors)
                if f.local == "refuse":
                    assert len(errors) == 1, (f.category, got)
    assert not logged.records, [r.getMessage() for r in logged.records]
