"""The short soak in CI: 10 sessions for 20 s through a real relay (its own process) against the fast upstream,
with barge-ins, bad frames and reconnects: nothing grows, nothing unexpected happens, the report is written."""

from __future__ import annotations

import json
from pathlib import Path

from parley.bench.soak import soak
from parley.bench.soak_report import write_report


async def test_short_soak_ends_flat_with_zero_errors(tmp_path: Path) -> None:
    result = await soak(10, 20.0, seed=7, interval_s=0.5)
    v, tally = result["verdict"], result["tally"]
    assert v["checks"] == {k: True for k in v["checks"]}, (v, tally)
    assert tally["connects"] > 10  # reconnects happened
    assert tally["bad_frames"] > 0 and tally["barge_ins"] > 0
    assert (
        tally["deltas"] > 0.9 * tally["appends"] - 10 * 5
    )  # the echo kept up (5 in flight per session at most)
    assert v["peak_sessions"] == 10
    out = tmp_path / "benchmarks"
    write_report(result, out)
    assert json.loads((out / "soak.json").read_text())["verdict"]["flat"] is True
    assert (out / "soak.png").stat().st_size > 0
    assert "<!-- bench:soak -->" in (tmp_path / "benchmarks.md").read_text()
