"""The crashes and holes the fuzz suite found, each pinned by a plain example (fixed in ``relay/wire.py`` and
``realtime/events.py``, the parsers of client frames)."""

from __future__ import annotations

import json

import pytest
from test_fuzz_local_session import local_session, send_raw

from parley.errors import InvalidRequest
from parley.realtime.events import event_id_of, parse_client_event
from parley.relay.wire import parse_client_frame

DEEP = "[" * 30_000 + "]" * 30_000  # under the size limit of the fuzz sessions


@pytest.mark.parametrize("const", ["NaN", "Infinity", "-Infinity"])
def test_relay_refuses_nan_and_infinity_instead_of_forwarding_them(const: str) -> None:
    # Python's json reads and writes them; the relay forwarded {"x":NaN}, which a strict upstream cannot parse.
    with pytest.raises(InvalidRequest) as caught:
        parse_client_frame(f'{{"type":"input_audio_buffer.clear","x":{const}}}')
    assert caught.value.code == "invalid_json"


def test_local_event_id_of_a_deeply_nested_frame_is_none() -> None:
    # It re-parsed the frame catching only ValueError: RecursionError ended the session's reader (the whole session).
    assert event_id_of(DEEP) is None


@pytest.mark.parametrize(
    "raw",
    [
        '{"type":"conversation.item.create","item":{"type":"message","role":"user",'
        '"content":[{"type":"input_text","text":"hi \\ud800"}]}}',
        '{"type":"session.update","session":{"type":"realtime","instructions":"\\udfff"}}',
        b'{"type":"conversation.item.create","item":{"type":"message","role":"user",'
        b'"content":[{"type":"input_text","text":"hi \xed\xa0\x80"}]}}',  # an encoded surrogate: not UTF-8
    ],
)
def test_local_refuses_lone_surrogates(raw: str | bytes) -> None:
    # Stored, such text made every later LLM request of the session fail (httpx encodes the body as UTF-8).
    with pytest.raises(InvalidRequest) as caught:
        parse_client_event(raw)
    assert caught.value.code == "invalid_json"


def test_local_still_takes_escaped_non_ascii_and_astral_text() -> None:
    raw = json.dumps(
        {"type": "session.update", "session": {"type": "realtime", "instructions": "é 😀 \u2028"}}
    )
    assert parse_client_event(raw).type == "session.update"


async def test_local_session_answers_a_deeply_nested_frame_and_lives_on() -> None:
    async with local_session() as h:
        await send_raw(h, DEEP)
        err = await h.expect("error")
        assert err["error"]["code"] == "invalid_json"
        assert await h.settle() == []
