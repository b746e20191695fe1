"""The headless pieces of the TUI's status lines: why pending items wait, items/s over every worker."""

from __future__ import annotations

import pytest

from tui_app.views import QueueView, Throughput


def _view(**kw) -> QueueView:
    base = {"pending": 10, "provider": "piper", "provider_busy": 1, "limit": 2}
    return QueueView(**(base | kw))


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        ({"pending": 0, "paused_by": "dataset"}, ""),  # nothing waits
        ({"paused_by": "dataset"}, "paused"),
        ({"paused_by": "piper"}, "paused (provider piper)"),
        ({"paused_by": "*"}, "paused (everything)"),
        ({"workers": 0}, "no worker running"),
        ({"cooling_s": 12.4}, "piper cooling down 12 s"),
        ({"provider_busy": 2}, "all slots busy"),
        ({"requests_only": True}, "requests only"),
        ({"wake_in_s": 2.6}, "backing off, next in 3 s"),
        ({}, ""),  # a free slot and nothing holding them back: being claimed
        # the first reason that holds is the one shown
        ({"paused_by": "dataset", "workers": 0, "provider_busy": 2}, "paused"),
        ({"cooling_s": 3.0, "provider_busy": 2}, "piper cooling down 3 s"),
    ],
)
def test_why_pending_items_wait(kw, reason):
    assert _view(**kw).reason() == reason


def test_slots_in_use_never_pass_the_limit():
    # a take still being written keeps its item generating after its slot went to the next request
    assert [_view(provider_busy=n).slots_in_use for n in (0, 1, 2, 3)] == [0, 1, 2, 2]
    assert _view(provider_busy=3).reason() == "all slots busy"


def test_reasons_without_clock_leave_out_the_seconds():
    assert _view(cooling_s=5).reason(clock_free=True) == "piper cooling down"
    assert _view(wake_in_s=5).reason(clock_free=True) == "backing off"


def test_throughput_while_busy_counts_the_recent_window_and_keeps_the_last_stretch_when_idle():
    rate = Throughput(window_s=30)
    assert rate.rate(100.0, busy=True) == 0.0
    for n in range(20):  # 2 items/s from t=100 to t=109.5
        rate.note(100.0 + n * 0.5)
    assert rate.rate(110.0, busy=True) == pytest.approx(20 / 10)
    # idle: the rate of the finished stretch, however long ago it ended
    assert rate.rate(500.0, busy=False) == pytest.approx(19 / 9.5)
    # busy again much later: the old stretch no longer counts
    rate.note(600.0)
    assert rate.rate(600.5, busy=True) == pytest.approx(1.0)  # one completion over at least 1 s
    assert rate.rate(700.0, busy=True) == 0.0
