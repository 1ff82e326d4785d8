"""The report of ``parley bench relay``: relay.json, relay.png and the ``relay`` section of docs/benchmarks.md."""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from parley.bench.report import md_table, write_section

logger = logging.getLogger(__name__)

TARGET_ADDED_P99_MS = 2.0
TARGET_SESSIONS = 200


def added(run: dict[str, Any], q: str) -> float:
    return float(run["relay"]["rtt_ms"][q] - run["direct"]["rtt_ms"][q])


def _finite(v: Any) -> Any:
    """NaN (nothing measured) as JSON null."""
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_finite(x) for x in v]
    return v


def _strip(m: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in m.items() if k not in ("rtt_samples_ms", "rtt_at_s")}


def write_report(runs: Sequence[dict[str, Any]], out: Path, *, setup: dict[str, Any]) -> None:
    """``setup`` holds chunk_ms, seconds_measured, warm_s, connects_per_s, sessions_per_load_generator and
    client_offers_permessage_deflate; the machine's facts are added here."""
    out.mkdir(parents=True, exist_ok=True)
    setup = {
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "appends_per_s_per_session": 1000 // setup["chunk_ms"],
        **setup,
    }
    doc = {
        "generated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "setup": setup,
        "target_added_p99_ms": TARGET_ADDED_P99_MS,
        "levels": [
            {
                "sessions": r["sessions"],
                "direct": _strip(r["direct"]),
                "relay": _strip(r["relay"]),
                "added_p50_ms": added(r, "p50"),
                "added_p99_ms": added(r, "p99"),
            }
            for r in runs
        ],
    }
    (out / "relay.json").write_text(json.dumps(_finite(doc), indent=1, allow_nan=False))
    _plot(runs, out / "relay.png")
    write_section("relay", _markdown(runs, setup, out.name), doc=out.parent / "benchmarks.md")
    logger.info("wrote %s and %s", out / "relay.json", out / "relay.png")


def _plot(runs: Sequence[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [str(r["sessions"]) for r in runs]
    x = list(range(len(runs)))
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for mode, color in (("direct", "tab:blue"), ("relay", "tab:orange")):
        for q, style in (("p50", "-o"), ("p99", "--s")):
            left.plot(x, [r[mode]["rtt_ms"][q] for r in runs], style, color=color, label=f"{mode} {q}")
    left.set_xticks(x, labels)
    left.set_xlabel("concurrent sessions")
    left.set_ylabel("append → echoed delta, ms")
    left.set_title("Round trip, direct vs through the relay")
    left.grid(alpha=0.3)
    left.legend(fontsize=8)
    width = 0.38
    right.bar([i - width / 2 for i in x], [added(r, "p50") for r in runs], width, label="added p50")
    right.bar([i + width / 2 for i in x], [added(r, "p99") for r in runs], width, label="added p99")
    right.axhline(TARGET_ADDED_P99_MS, color="red", ls=":", label=f"target p99 ≤ {TARGET_ADDED_P99_MS:g} ms")
    right.set_xticks(x, labels)
    right.set_xlabel("concurrent sessions")
    right.set_ylabel("relay − direct, ms")
    right.set_title("Latency added by the relay")
    right.grid(axis="y", alpha=0.3)
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pct(v: Any) -> str:
    return "—" if not isinstance(v, float) or math.isnan(v) else f"{v:.0f}"


def _ms(v: float) -> str:
    return "—" if math.isnan(v) else f"{v:.2f}"


NOISY_OTHER_PCT = 20.0  # other processes above this share of one core during a run make its figures noisy


def _row(r: dict[str, Any]) -> list[object]:
    d, y = r["direct"], r["relay"]
    dc, yc = d["cpu_pct"], y["cpu_pct"]
    return [
        r["sessions"],
        _ms(d["rtt_ms"]["p50"]), _ms(d["rtt_ms"]["p99"]), _ms(y["rtt_ms"]["p50"]), _ms(y["rtt_ms"]["p99"]),
        _ms(added(r, "p50")), _ms(added(r, "p99")),
        _pct(yc.get("relay")),
        f"{_pct(dc.get('upstream'))} / {_pct(yc.get('upstream'))}",
        f"{'+'.join(_pct(p) for p in dc['loadgen'])} / {'+'.join(_pct(p) for p in yc['loadgen'])}",
        f"{_pct(dc.get('other'))} / {_pct(yc.get('other'))}",
        f"{d['lost'] + d['sessions_failed']} / {y['lost'] + y['sessions_failed']}",
    ]  # fmt: skip


def _notes(r: dict[str, Any]) -> list[str]:
    notes = []
    for mode in ("direct", "relay"):
        m, n = r[mode], r["sessions"]
        if m["loadgen_saturated"]:
            notes.append(
                f"{n} sessions, {mode}: the load generator fell behind (CPU "
                f"{'+'.join(_pct(p) for p in m['cpu_pct']['loadgen'])} % of a core; appends left "
                f"{m['late_ms']['p99']:.1f} ms late at p99): saturated, or starved of CPU by other processes, so "
                "these figures measure the load generator as much as the relay."
            )
        other = m["cpu_pct"].get("other", math.nan)
        if isinstance(other, float) and other > NOISY_OTHER_PCT:
            notes.append(
                f"{n} sessions, {mode}: other processes used {other:.0f} % of a core during the run; noisy figures."
            )
        if m["errors"]:
            notes.append(f"{n} sessions, {mode}: errors {m['errors']}.")
    return notes


def _markdown(runs: Sequence[dict[str, Any]], setup: dict[str, Any], folder: str) -> str:
    table = md_table(
        ["sessions", "direct p50", "direct p99", "relay p50", "relay p99", "added p50", "added p99",
         "relay CPU %", "upstream CPU % (d / r)", "load gen CPU % (d / r)", "other load CPU % (d / r)",
         "lost + failed (d / r)"],
        [_row(r) for r in runs],
    )  # fmt: skip
    notes = [n for r in runs for n in _notes(r)]
    deflate = sum(r["relay"].get("sessions_deflate", 0) for r in runs)
    offered = "offers" if setup["client_offers_permessage_deflate"] else "does not offer"
    nworkers = ", ".join(f"{r['sessions']}: {len(r['relay']['cpu_pct']['loadgen'])}" for r in runs)
    nrelay = setup.get("relay_workers", 1)
    relay = (
        "`parley serve`, its own process, in-memory limiter"
        if nrelay == 1
        else f"`parley serve --workers {nrelay}`, {nrelay} processes on one port, Redis limiter, CPU summed"
    )
    return f"""## `parley bench relay`

The latency the relay adds to each audio event, at several levels of concurrent sessions streaming real-time audio
both ways against a fast scripted upstream. {_verdict(runs)}{_noise(runs)}

**Setup.** One machine with {setup["cores"]} cores ({setup["machine"]}, Python {setup["python"]}) runs everything:
the fast upstream (`parley.bench.fast_upstream`, websockets + uvloop), the relay under test ({relay}, one JWT user
per session) and the load generator (`parley.bench.relay_load`,
websockets + uvloop, its own processes: {setup["sessions_per_load_generator"]} sessions each; processes per level:
{nworkers}), all over 127.0.0.1. Each session streams PCM16 mono 24 kHz in {setup["chunk_ms"]} ms chunks, i.e.
{setup["appends_per_s_per_session"]} `input_audio_buffer.append` per second per session (6.4 kB of base64 each),
and the upstream echoes every chunk back at once as a `response.output_audio.delta`, so audio flows both ways at
real-time rate. The client {offered} permessage-deflate, as browsers do; the fast upstream declines it, and the
relay accepted it on {deflate} session(s). Connects are spread at {setup["connects_per_s"]:g} per second; then
{setup["warm_s"]:g} s of streaming are not counted, then {setup["seconds_measured"]:g} s are.

**What is measured.** The round trip (RTT) of each append: sent by the client → the delta carrying the same audio
received (matched by a sequence number inside the audio, not by ids). Each level runs twice with the same load:
DIRECT to the upstream, then THROUGH the relay (two WebSocket hops instead of one). **Added** = relay RTT − direct
RTT at the same percentile (a difference of percentiles, not a percentile of differences). CPU is % of one core
over the measured window, from `/proc/<pid>/stat`; "other load" is what the rest of the machine used meanwhile
(from `/proc/stat`), the noise. The load generator shares the cores, so the relay's own CPU also slows the load
generator's event loop a little; that counts as added latency too, which errs against the relay.

{table}

Milliseconds unless marked. "lost" = appends in the window whose delta did not come back within 2 s.
{chr(10).join("- " + n for n in notes)}

Plot: `{folder}/relay.png` (RTT p50/p99 direct vs relay, and the added p50/p99 against the target); raw numbers:
`{folder}/relay.json`. Reproduce on a quiet machine: `parley bench relay --sessions 50,100,200 --seconds 30
--workers {nrelay}`.

![relay bench]({folder}/relay.png)
"""


def _noise(runs: Sequence[dict[str, Any]]) -> str:
    others = [r[m]["cpu_pct"].get("other", math.nan) for r in runs for m in ("direct", "relay")]
    worst = max((o for o in others if isinstance(o, float) and not math.isnan(o)), default=0.0)
    if worst <= NOISY_OTHER_PCT:
        return ""
    return (
        f"\n\n**Noisy run:** other processes used up to {worst:.0f} % of a core while these figures were taken; "
        "rerun on a quiet machine before trusting the latencies (the CPU figures are less affected)."
    )


def _verdict(runs: Sequence[dict[str, Any]]) -> str:
    at = [r for r in runs if r["sessions"] == TARGET_SESSIONS]
    if not at:
        return f"(The target, ≤ {TARGET_ADDED_P99_MS:g} ms p99 added at {TARGET_SESSIONS} sessions, was not run.)"
    a = added(at[0], "p99")
    met = "meets" if a <= TARGET_ADDED_P99_MS else "misses"
    return (
        f"At {TARGET_SESSIONS} sessions the relay adds {a:.2f} ms at p99: it **{met}** the target of "
        f"≤ {TARGET_ADDED_P99_MS:g} ms."
    )
