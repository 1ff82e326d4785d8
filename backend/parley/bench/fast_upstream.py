"""A scripted Realtime upstream that answers at once, for ``parley bench relay``.

It speaks the least of the GA protocol a relay needs: ``session.created`` on connect, ``session.updated`` for each
``session.update``, and for every ``input_audio_buffer.append`` one ``response.output_audio.delta`` carrying the
same audio back at once, with the client's ``event_id`` in ``item_id``. Nothing else is answered. ``GET /healthz``
answers 200, so a relay whose readiness probes its local voice server finds it healthy.

Run it in its own process (``python -m parley.bench.fast_upstream --port P``) so its CPU is not counted against
the relay or the load generator. Every connection is bounded in time and in messages.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from http import HTTPStatus
from typing import Any

logger = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 1 << 20
MAX_SESSION_S = 1800.0
MAX_MESSAGES_PER_SESSION = 2_000_000

_SESSION = {
    "type": "realtime",
    "object": "realtime.session",
    "id": "sess_fastupstream",
    "model": "fast-upstream",
    "output_modalities": ["audio"],
    "instructions": "",
    "audio": {
        "input": {"format": {"type": "audio/pcm", "rate": 24000}, "turn_detection": None},
        "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "alloy"},
    },
}


def answer(event: dict[str, Any], counter: int) -> str | None:
    """The reply to one client event (serialized), or None. Pure: the socket code only pumps."""
    kind = event.get("type")
    if kind == "input_audio_buffer.append":
        return json.dumps(
            {
                "type": "response.output_audio.delta",
                "event_id": f"event_up{counter}",
                "response_id": "resp_fastupstream",
                "item_id": str(event.get("event_id") or f"item_up{counter}"),
                "output_index": 0,
                "content_index": 0,
                "delta": event.get("audio", ""),
            }
        )
    if kind == "session.update":
        session = dict(_SESSION)
        update = event.get("session")
        if isinstance(update, dict):
            session.update(update)
        return json.dumps({"type": "session.updated", "event_id": f"event_up{counter}", "session": session})
    return None


async def _handle(ws: Any) -> None:
    await ws.send(json.dumps({"type": "session.created", "event_id": "event_up0", "session": _SESSION}))
    try:
        async with asyncio.timeout(MAX_SESSION_S):
            count = 0
            async for raw in ws:
                count += 1
                if count > MAX_MESSAGES_PER_SESSION:
                    break
                try:
                    event = json.loads(raw)
                except ValueError:
                    continue
                reply = answer(event, count) if isinstance(event, dict) else None
                if reply is not None:
                    await ws.send(reply)
    except TimeoutError:
        logger.info("closing a session after %.0f s", MAX_SESSION_S)
    finally:
        await ws.close()


def _process_request(connection: Any, request: Any) -> Any:
    if request.path.split("?", 1)[0] == "/healthz":
        return connection.respond(HTTPStatus.OK, "ok\n")
    return None


async def serve(host: str, port: int, *, lifetime_s: float) -> None:
    """Serve until ``lifetime_s`` passes (or the process is signalled)."""
    from websockets.asyncio.server import serve as ws_serve

    async with ws_serve(
        _handle,
        host,
        port,
        process_request=_process_request,
        max_size=MAX_MESSAGE_BYTES,
        compression=None,  # a baseline without permessage-deflate, whatever the client offers
        ping_interval=None,
    ):
        logger.info("fast upstream listening on ws://%s:%d/v1/realtime", host, port)
        await asyncio.sleep(lifetime_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="fast scripted Realtime upstream (bench only)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--lifetime-s", type=float, default=3600.0, help="exit after this long")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    import uvloop

    uvloop.run(serve(args.host, args.port, lifetime_s=args.lifetime_s))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
