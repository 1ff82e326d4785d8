"""Smoke test of the relay bench harness: 2 sessions x 1 s straight to the fast upstream (no relay, no timings)."""

from __future__ import annotations

from pathlib import Path

from parley.bench.fast_upstream import answer
from parley.bench.relay import fast_upstream, measure
from parley.bench.relay_load import append_event, delta_seq


def test_chunks_carry_their_sequence_number_through_the_echo() -> None:
    import json

    append = json.loads(append_event(41, "AAAA"))
    delta = json.loads(answer(append, 7) or "{}")
    assert delta["type"] == "response.output_audio.delta"
    assert delta["item_id"] == append["event_id"]
    assert delta_seq(delta["delta"]) == 41
    assert delta_seq("not ours at all!") is None


async def test_direct_run_produces_round_trip_samples(tmp_path: Path) -> None:
    async with fast_upstream(tmp_path, lifetime_s=120.0) as (url, up):
        headers = [{"Authorization": "Bearer smoke"} for _ in range(2)]
        m = await measure(url, headers, seconds=1.0, ramp_s=0.1, warm_s=0.3, watch={"upstream": up.pid},
                          work_dir=tmp_path)  # fmt: skip
    assert m["sessions_ok"] == 2, m["errors"]
    assert m["received"] > 0
    assert len(m["rtt_samples_ms"]) == m["received"]
    assert m["lost"] == 0
    assert len(m["cpu_pct"]["loadgen"]) == 1
