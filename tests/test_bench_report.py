"""`make bench`'s report: the JSON line holds the keys the issue asks for; loaded figures are marked (no I/O)."""

from __future__ import annotations

import os

import pytest

from bench.all import HEADLINE_KEYS, Report, Row, headline, table
from bench.common import least_time_s


def test_headline_has_every_key_and_marks_a_loaded_machine() -> None:
    report = Report()
    busy = (float(os.cpu_count() or 1), 1.0, 1.0)
    report.rows.append(Row("outbound p95", "300 ms", "100 ms", 0.33, "≤ 2×", busy))
    report.figures["outbound"] = {"latency_ms_p95": 300.0, "graph_round_trip_ms": 100.0, "first_graph_call_s": 0.1,
                                  "table_ops_per_change": 8.5, "cpu_ms_per_change": 20.0}
    report.figures["inbound"] = {"table_ops_per_change": 12.0}
    report.figures["big_room"] = [{"events": 5000, "daily_s": 3.2}, {"events": 1000, "daily_s": 1.3}]
    line = headline(report)
    assert set(HEADLINE_KEYS) <= set(line)
    assert line["outbound_ms_p95"] == 300.0 and line["table_ops_per_inbound_change"] == 12.0
    assert line["big_room_daily_s"] == 1.3 and line["initial_bound_over_wall"] is None  # not measured: null
    assert line["loaded"] is True and "(loaded)" in table(report)


def test_a_quiet_machine_is_not_marked() -> None:
    report = Report()
    report.rows.append(Row("delta parsing", "0.01 ms", "0.1 ms", 10.0, "≤ 0.1 ms", (0.0, 0.0, 0.0)))
    assert "(loaded)" not in table(report) and headline(report)["loaded"] is False


def most_in_any_window(times: list[float], window_s: float) -> int:
    return max(sum(1 for t in times if start <= t < start + window_s) for start in times)


@pytest.mark.parametrize(("requests", "limit"), [(1, 100), (100, 100), (101, 100), (310, 100), (3010, 100),
                                                 (1000, 100), (3131, 400), (7, 3)])
def test_the_anny_bound_is_what_a_client_sending_as_early_as_allowed_reaches(requests: int, limit: int) -> None:
    """Each request sent at the earliest moment the limit allows (`limit` at once, then each one a
    window after the request `limit` before it): that schedule keeps the limit in every window, and
    its last request is the bound, no earlier (a bound below it made the ratios look worse than
    the app is, one above it better)."""
    window_s = 6.0
    sent: list[float] = []
    for i in range(requests):
        sent.append(0.0 if i < limit else sent[i - limit] + window_s)
    assert most_in_any_window(sent, window_s) <= limit
    assert least_time_s(requests, limit, window_s) == max(sent)
