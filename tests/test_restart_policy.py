"""The restart policy, on a fake clock: backoff doubles, is capped, resets after a quiet window, and a crash loop
gives up after ``max_restarts`` restarts within the window."""

from __future__ import annotations

import pytest

from parley.restart_policy import RestartPolicy


def policy(**kw: float) -> RestartPolicy:
    args = {"base_s": 0.5, "max_s": 4.0, "max_restarts": 10, "window_s": 300.0, **kw}
    return RestartPolicy(args["base_s"], args["max_s"], int(args["max_restarts"]), args["window_s"])


def crash_loop(p: RestartPolicy, *, now: float = 0.0, up_for_s: float = 0.0, n: int) -> list[float | None]:
    """``n`` deaths, each ``up_for_s`` after the previous restart."""
    delays: list[float | None] = []
    for _ in range(n):
        delay = p.on_exit(now)
        delays.append(delay)
        if delay is None:
            break
        now += delay + up_for_s
    return delays


def test_backoff_doubles_up_to_the_cap() -> None:
    assert crash_loop(policy(), n=6) == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_a_crash_loop_gives_up_after_max_restarts_within_the_window() -> None:
    p = policy(max_restarts=3)
    assert crash_loop(p, n=5) == [0.5, 1.0, 2.0, None]
    assert p.on_exit(10.0) is None  # and stays given up while the restarts are counted


def test_a_child_that_ran_a_whole_window_starts_again_at_base() -> None:
    p = policy(window_s=60.0, max_restarts=3)
    assert crash_loop(p, n=3) == [0.5, 1.0, 2.0]  # restarts at t=0.5, 1.5 and 3.5
    assert p.recent(3.5 + 59.9) == 1
    # a death a whole window after the last restart sees none of the three
    assert p.on_exit(3.5 + 60.0) == 0.5


def test_restarts_leave_the_window_one_by_one() -> None:
    p = policy(window_s=10.0, max_restarts=5)
    assert crash_loop(p, n=2) == [0.5, 1.0]  # restarts at t=0.5 and t=1.5
    assert p.recent(10.4) == 2 and p.recent(10.5) == 1 and p.recent(11.5) == 0


def test_zero_restarts_allowed_gives_up_at_once() -> None:
    assert policy(max_restarts=0).on_exit(0.0) is None


def test_a_huge_cap_does_not_overflow() -> None:
    p = policy(base_s=1.0, max_s=30.0, max_restarts=5000, window_s=1e9)
    assert crash_loop(p, n=2000)[-1] == 30.0


@pytest.mark.parametrize("bad", [{"base_s": -1.0}, {"max_s": 0.1}, {"max_restarts": -1}, {"window_s": 0.0}])
def test_inconsistent_settings_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        policy(**bad)
