"""`make bench`'s report: the JSON line holds the keys the issue asks for; loaded figures are marked (no I/O)."""

from __future__ import annotations

import os

from bench.all import HEADLINE_KEYS, Report, Row, headline, table


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
