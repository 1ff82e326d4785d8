"""The ``parley`` command line. Each sub-command imports only what it needs, so ``parley token`` stays instant."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Sequence

from parley import aio
from parley.settings import Settings

logger = logging.getLogger(__name__)


def _add_host_port(p: argparse.ArgumentParser, port: int) -> None:
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=port, help=f"port to listen on (default {port})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parley", description="Parley voice relay and local voice server")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser(
        "up", help="all-in-one demo on CPU: relay + local voice server + llama.cpp LLM server"
    )
    _add_host_port(up, 8080)
    up.add_argument(
        "--local-port", type=int, default=0, help="port of the local voice server (default: free)"
    )
    up.add_argument(
        "--language",
        default=None,
        help="the assistant's default language: en, fr or de (default PARLEY_LANGUAGE, en); fr and de also use the "
        "multilingual embedder for the knowledge base, with the French and German sample documents",
    )
    up.add_argument(
        "--tls",
        action="store_true",
        help="serve HTTPS/WSS with a self-signed certificate for this machine's names and LAN address (made on "
        "first start; PARLEY_TLS_CERT_FILE/_KEY_FILE take precedence), so a phone's browser allows the microphone",
    )

    serve = sub.add_parser("serve", help="run the relay alone")
    _add_host_port(serve, 8080)
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="relay processes sharing the port (SO_REUSEPORT), each with its own event loop; more than 1 needs "
        "the Redis limiter (PARLEY_REDIS_URL). Default 1",
    )
    serve.add_argument("--fd", type=int, default=None, help=argparse.SUPPRESS)  # a worker's listening socket
    serve.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)  # a worker: "I serve"

    local = sub.add_parser("local-server", help="run the local voice server alone (STT -> LLM -> TTS)")
    _add_host_port(local, 8090)

    token = sub.add_parser(
        "token", help="mint a JWT signed with PARLEY_JWT_SECRET (printed on the last line)"
    )
    token.add_argument("--user", required=True, help="the user id (JWT sub)")
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")
    token.add_argument("--provider", action="append", help="restrict the user to this provider (repeatable)")
    token.add_argument(
        "--kb",
        action="append",
        help="grant this knowledge base (repeatable; the first is the session default)",
    )

    ingest = sub.add_parser(
        "ingest", help="add files and folders (Markdown, text, HTML, PDF) to a knowledge base"
    )
    ingest.add_argument("paths", nargs="+", metavar="PATH", help="files or folders (recursive)")
    ingest.add_argument("--kb", default=None, help="knowledge base (default PARLEY_KB_DEFAULT)")
    ingest.add_argument("--prune", action="store_true", help="remove documents whose file is gone from PATHs")
    ingest.add_argument("--force", action="store_true", help="re-embed files even when unchanged")

    bench = sub.add_parser("bench", help="benchmarks; results go to docs/benchmarks.md")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    turn = bench_sub.add_parser("turn", help="speech_stopped -> transcript -> first token -> first audio")
    turn.add_argument("--turns", type=int, default=20, help="number of spoken turns (default 20)")
    turn.add_argument(
        "--url", default="", help="an already running local server's ws URL (default: start one)"
    )
    turn.add_argument("--out", default="docs/benchmarks", help="where to write the JSON and plot")
    turn.add_argument("--via-relay", action="store_true", help="run `parley up` and speak through the relay")
    relay = bench_sub.add_parser("relay", help="latency the relay adds at 50/100/200 concurrent sessions")
    relay.add_argument("--sessions", default="50,100,200", help="comma-separated concurrency levels")
    relay.add_argument("--seconds", type=float, default=10.0, help="seconds of streaming per level")
    relay.add_argument("--out", default="docs/benchmarks", help="where to write the JSON and plot")
    failover = bench_sub.add_parser("failover", help="time without an answer when a session's upstream dies")
    failover.add_argument("--kills", type=int, default=20, help="upstream kills (default 20)")
    failover.add_argument("--out", default="docs/benchmarks", help="where to write the JSON")
    relay.add_argument(
        "--workers",
        type=int,
        default=1,
        help="relay worker processes (parley serve --workers N); above 1 they share PARLEY_REDIS_URL, or a "
        "throw-away redis-server",
    )
    rag = bench_sub.add_parser(
        "rag", help="knowledge base: retrieval speed, recall, turn latency, grounded answers"
    )
    rag.add_argument(
        "--sections",
        default="retrieval,recall,turns,grounded",
        help="comma-separated: retrieval, recall, turns, grounded (default all)",
    )
    rag.add_argument("--sizes", default="1000,10000,100000", help="corpus sizes for the retrieval timing")
    rag.add_argument("--turns", type=int, default=20, help="spoken turns per configuration (default 20)")
    rag.add_argument(
        "--models", default="smollm2-135m,qwen2.5-0.5b", help="LLMs for the grounded-answer section"
    )
    rag.add_argument("--out", default="docs/benchmarks", help="where to write the JSON and plot")
    soak = bench_sub.add_parser(
        "soak",
        help="N sessions for M minutes through a relay (barge-ins, bad frames, reconnects): stays flat?",
    )
    soak.add_argument("--sessions", type=int, default=50, help="concurrent sessions (default 50)")
    soak.add_argument("--minutes", type=float, default=5.0, help="minutes of load (default 5)")
    soak.add_argument("--out", default="docs/benchmarks", help="where to write the JSON and plot")
    stt = bench_sub.add_parser(
        "stt", help="speech to text: word error rate and latency per language on real recordings"
    )
    stt.add_argument("--langs", default="en,fr,de", help="comma-separated languages (default en,fr,de)")
    stt.add_argument("--max-clips", type=int, default=40, help="clips per corpus and language (default 40)")
    stt.add_argument("--out", default="docs/benchmarks", help="where to write the JSON and plot")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings()
    from parley.logs import setup_logging

    setup_logging(settings)
    try:
        return _dispatch(args, settings)
    except KeyboardInterrupt:
        return 130
    except asyncio.CancelledError:  # SIGTERM (see parley.aio)
        return 143


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "token":
        from parley.relay.auth import mint_token

        extra: dict[str, object] = {}
        if args.provider:
            extra[settings.jwt_providers_claim] = args.provider
        if args.kb:
            extra[settings.kb_claim] = args.kb
        try:
            token = mint_token(settings, args.user, ttl_s=args.ttl, extra_claims=extra)
        except ValueError as exc:
            sys.stderr.write(f"parley token: {exc}\n")
            return 2
        sys.stdout.write(f"JWT for user {args.user!r}, valid {args.ttl} s:\n{token}\n")
        return 0
    if args.command == "ingest":
        from parley.rag.ingest import run_ingest_command

        return aio.run(
            run_ingest_command(settings, args.paths, kb=args.kb, prune=args.prune, force=args.force)
        )
    if args.command == "local-server":
        from parley.local.server import run_local_server

        run_local_server(settings, args.host, args.port)
        return 0
    if args.command == "serve":
        return _serve(args, settings)
    if args.command == "up":
        from parley.procs import StartFailed
        from parley.up import run_up

        try:
            return aio.run(
                run_up(
                    settings,
                    args.host,
                    args.port,
                    local_port=args.local_port,
                    tls=args.tls,
                    language=args.language,
                )
            )
        except StartFailed as exc:
            if exc.detail:
                logger.error("last output of the process that failed:\n%s", exc.detail)
            sys.stderr.write(f"parley up: {exc.message}\n")
            return 1
    if args.command == "bench":
        if args.bench == "turn":
            from parley.bench.turn import run_turn_bench

            return aio.run(
                run_turn_bench(
                    settings, turns=args.turns, url=args.url, out=args.out, via_relay=args.via_relay
                )
            )
        if args.bench == "rag":
            from parley.bench.rag import run_rag_bench

            return aio.run(
                run_rag_bench(
                    settings,
                    sizes=[int(x) for x in args.sizes.split(",") if x.strip()],
                    turns=args.turns,
                    out=args.out,
                    sections=[x.strip() for x in args.sections.split(",") if x.strip()],
                    models=[x.strip() for x in args.models.split(",") if x.strip()],
                )
            )
        if args.bench == "stt":
            from parley.bench.stt import run_stt_bench

            langs = [x.strip() for x in args.langs.split(",") if x.strip()]
            return aio.run(run_stt_bench(settings, languages=langs, max_clips=args.max_clips, out=args.out))
        if args.bench == "soak":
            from parley.bench.soak import run_soak_bench

            return aio.run(
                run_soak_bench(settings, sessions=args.sessions, minutes=args.minutes, out=args.out)
            )
        if args.bench == "failover":
            from parley.bench.failover import run_failover_bench

            return aio.run(run_failover_bench(settings, kills=args.kills, out=args.out))
        from parley.bench.relay import run_relay_bench

        levels = [int(x) for x in args.sessions.split(",") if x.strip()]
        return aio.run(
            run_relay_bench(
                settings, levels=levels, seconds=args.seconds, out=args.out, relay_workers=args.workers
            )
        )
    raise AssertionError(args.command)


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    """``parley serve``: one relay process; or, with ``--workers N``, N of them (``parley.relay.workers``)."""
    if args.workers > 1 and args.fd is None:
        from parley.relay.workers import WorkersFailed, serve_workers, workers_refusal

        refusal = workers_refusal(settings, args.workers)
        if refusal is not None:
            sys.stderr.write(f"parley serve: {refusal}\n")
            return 2
        try:
            aio.run(serve_workers(settings, args.host, args.port, args.workers))
        except WorkersFailed as exc:
            sys.stderr.write(f"parley serve: {exc}\n")
            return 1
        return 0
    import socket

    from parley.relay.app import run_relay
    from parley.tls import TLSConfigError, server_files

    try:
        server_files(settings)
    except TLSConfigError as exc:
        sys.stderr.write(f"parley serve: {exc}\n")
        return 2

    sock = None if args.fd is None else socket.socket(fileno=args.fd)
    run_relay(settings, args.host, args.port, sock=sock, on_started=_ready_reporter(args.ready_fd))
    return 0


def _ready_reporter(fd: int | None) -> Callable[[], None] | None:
    """A ``--workers`` child tells its parent it accepts connections: one byte on the pipe ``fd``."""
    if fd is None:
        return None
    ready_fd = fd

    def report() -> None:
        os.write(ready_fd, b"1")
        os.close(ready_fd)

    return report


if __name__ == "__main__":
    raise SystemExit(main())
