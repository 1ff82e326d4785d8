"""The report of ``parley bench soak``: soak.json, soak.png and the ``soak`` section of docs/benchmarks.md."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import platform
from pathlib import Path
from typing import Any

from parley.bench.report import md_table, write_section
from parley.bench.soak import RSS_TOLERANCE

logger = logging.getLogger(__name__)


def write_report(result: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    machine = {"cores": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version()}
    doc = {"generated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "machine": machine, **result}
    (out / "soak.json").write_text(json.dumps(doc, indent=1))
    _plot(result, out / "soak.png")
    write_section("soak", _markdown(result, machine, out.name), doc=out.parent / "benchmarks.md")
    logger.info("wrote %s and %s", out / "soak.json", out / "soak.png")


def _plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result["samples"]
    t = [s["t"] for s in samples]
    series = [
        ("RSS, MB", [s["rss_kb"] / 1024 for s in samples]),
        ("open fds", [s["fds"] for s in samples]),
        ("asyncio tasks", [s["tasks"] for s in samples]),
        ("live sessions", [s["sessions"] for s in samples]),
    ]
    fig, axes = plt.subplots(len(series), 1, figsize=(8, 8), sharex=True)
    end_of_load = max((s["t"] for s in samples if s["phase"] == "load"), default=0.0)
    for ax, (label, values) in zip(axes, series, strict=True):
        ax.plot(t, values, "-", lw=1)
        ax.axvline(end_of_load, color="grey", ls=":", lw=1)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_title(f"Relay under soak: {result['setup']['sessions']} sessions (dotted: clients stop)")
    axes[-1].set_xlabel("seconds")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _markdown(result: dict[str, Any], machine: dict[str, Any], folder: str) -> str:
    setup, tally, v = result["setup"], result["tally"], result["verdict"]
    base, end = v["baseline"], v["end"]
    table = md_table(
        ["", "before the first connect", "peak under load", "after all sessions closed"],
        [
            ["live sessions", base["sessions"], v["peak_sessions"], end["sessions"]],
            ["open fds", base["fds"], v["peak_fds"], end["fds"]],
            ["asyncio tasks", base["tasks"], v["peak_tasks"], end["tasks"]],
            [
                "RSS, MB",
                f"{base['rss_kb'] / 1024:.1f}",
                f"{v['rss_max_mb']:.1f}",
                f"{end['rss_kb'] / 1024:.1f}",
            ],
        ],
    )
    checks = ", ".join(f"{k} {'✓' if ok else '✗'}" for k, ok in v["checks"].items())
    minutes = setup["seconds"] / 60
    return f"""## `parley bench soak`

{setup["sessions"]} sessions for {minutes:g} minutes through a real relay: **{"flat" if v["flat"] else "NOT flat"}**.
Median RSS {v["rss_second_quarter_median_mb"]:.1f} MB in the second quarter of the run, {v["rss_last_quarter_median_mb"]:.1f} MB
in the last ({v["rss_change_pct"]:+.1f} %; the criterion is within ±{100 * RSS_TOLERANCE:g} %).

**Setup.** One machine with {machine["cores"]} cores ({machine["machine"]}, Python {machine["python"]}): the fast
scripted upstream (`parley.bench.fast_upstream`, its own process), the relay (`parley.bench.soak_relay`: the app and
server of `parley serve`, its own process, in-memory limiter, no knowledge base, plus a stats route) and the
clients (`parley.bench.soak_load`, in the bench's process). Each of the {setup["sessions"]} slots holds one session at
a time: it streams a {setup["chunk_ms"]} ms `input_audio_buffer.append` every {setup["chunk_ms"]} ms (echoed back as
audio deltas by the upstream), barges in (`response.cancel` or `input_audio_buffer.clear`) and sends a bad frame
(not JSON, an array, an unknown type, a wrong field type, duplicate keys, NaN, a lone surrogate, 5,000-deep nesting,
invalid UTF-8 in a binary frame) each with a 2 % chance per chunk, and reconnects after
{setup["lifetime_s"][0]:g}–{setup["lifetime_s"][1]:g} s. The relay's RSS and open fds (from /proc), asyncio tasks
and live sessions are sampled every {setup["interval_s"]:g} s from inside it, and until they settle after the
clients stop.

**Counted.** {tally["connects"]} sessions ({tally["connect_failures"]} failed connects), {tally["appends"]} appends,
{tally["deltas"]} audio deltas back, {tally["barge_ins"]} barge-ins, {tally["bad_frames"]} bad frames answered by
{tally["bad_frame_errors"]} errors; unexpected errors {tally["unexpected_errors"] or "none"}, unexpected closes
{tally["unexpected_closes"] or "none"}.

{table}

**Flat** means: the last quarter's median RSS within ±{100 * RSS_TOLERANCE:g} % of the second quarter's (the first
quarter is the warm-up), no session left and fds and tasks back to (or below) their count before the first connect,
no failed connect, no error or close the clients did not provoke, and every bad frame answered with one error.
This run: {checks}.

Plot: `{folder}/soak.png` (RSS, fds, tasks, sessions over time); raw samples: `{folder}/soak.json`. Reproduce:
`parley bench soak --sessions {setup["sessions"]} --minutes {minutes:g}`.

![soak]({folder}/soak.png)
"""
