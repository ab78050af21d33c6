"""`make bench`: every benchmark in one run, each against the bound it is held to; a table, then JSON.

Each benchmark runs in a fresh interpreter (its own stack), in turn. With each, the machine's
load average is taken before it starts; a figure taken while the 1-minute load already
exceeded half the cores (someone else was using the machine) is marked "loaded". The JSON
document goes to --out; its last line on stdout holds the headline keys.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sync.room_runs import COALESCE_S

# What the JSON line must hold (issue: `make bench`), whatever else it carries.
HEADLINE_KEYS = ("initial_bound_over_wall", "outbound_ms_p95", "graph_round_trip_ms", "first_graph_call_s",
                 "table_ops_per_outbound_change", "table_ops_per_inbound_change", "cpu_ms_per_outbound_change",
                 "big_room_daily_s", "loadavg")


@dataclass
class Row:
    what: str
    measured: str
    bound: str
    ratio: float | None  # bound / measured: 1.0 is as fast as the limits allow
    target: str
    loadavg: tuple[float, float, float]

    @property
    def loaded(self) -> bool:
        return self.loadavg[0] > (os.cpu_count() or 1) / 2


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)


def run_module(module: str, *args: str, timeout: float = 3600) -> tuple[list[dict[str, Any]], tuple[float, ...]]:
    """Run a benchmark module; its JSON lines, and the load average before it started."""
    load = tuple(round(x, 2) for x in os.getloadavg())
    done = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{module} failed ({done.returncode}): {done.stderr[-2000:]}")
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return lines, load


def ratio(bound: float, measured: float) -> float | None:
    return round(bound / measured, 3) if measured and measured == measured else None


def outbound(report: Report) -> None:
    [out], load = run_module("bench.outbound")
    rt = out["graph_round_trip_ms"]
    report.figures["outbound"] = out | {"loadavg": load}
    rows = [
        Row("outbound webhook → Graph write, 20/s, p50 / p95",
            f"{out['latency_ms_p50']:.0f} / {out['latency_ms_p95']:.0f} ms", f"{rt:.0f} ms Graph round trip",
            ratio(rt, out["latency_ms_p95"]), "p95 ≤ 2× round trip", load),
        Row("… of which after the burst's onset (listener no longer backed off)",
            f"{out['latency_steady_ms_p50']:.0f} / {out['latency_steady_ms_p95']:.0f} ms",
            f"{rt:.0f} ms Graph round trip", ratio(rt, out["latency_steady_ms_p95"]), "p95 ≤ 2× round trip", load),
        Row("… where one instance runs every function (not Flex Consumption): the queue write wakes the listener",
            f"{out['shared_instance_latency_ms_p50']:.0f} / {out['shared_instance_latency_ms_p95']:.0f} ms",
            f"{rt:.0f} ms Graph round trip", ratio(rt, out["shared_instance_latency_ms_p95"]),
            "– (the app's path without the queue hop's floor)", load),
        Row("outbound webhook → Graph write, idle (one per 3 s), p50 / p95",
            f"{out['idle_latency_ms_p50']:.0f} / {out['idle_latency_ms_p95']:.0f} ms", f"{rt:.0f} ms Graph round trip",
            ratio(rt, out["idle_latency_ms_p95"]), "– (queue backoff, see docs/development.md: the runner)", load),
        Row("Table operations per outbound change", f"{out['table_ops_per_change']:.1f}", "3",
            ratio(3, out["table_ops_per_change"]), "≤ 3", load),
        Row("CPU per outbound change (runner thread)", f"{out['cpu_ms_per_change']:.1f} ms", "–", None, "–", load),
        Row("CPU per Graph write (client, 4 in flight as a mailbox allows; bare httpx beside it)",
            f"{out['cpu_ms_per_graph_write']:.2f} ms (httpx {out['cpu_ms_per_raw_httpx_write']:.2f})", "2 ms",
            ratio(2, out["cpu_ms_per_graph_write"]), "≤ 2 ms", load),
        Row("… one at a time, after 100 ms idle each (bare httpx beside it)",
            f"{out['cpu_ms_per_graph_write_one_at_a_time']:.2f} ms "
            f"(httpx {out['cpu_ms_per_raw_httpx_write_one_at_a_time']:.2f})", "2 ms",
            ratio(2, out["cpu_ms_per_graph_write_one_at_a_time"]), "–", load),
        Row("delta parsing per event", f"{out['delta_parse_ms_per_event']:.3f} ms", "0.1 ms",
            ratio(0.1, out["delta_parse_ms_per_event"]), "≤ 0.1 ms", load),
        Row("cold start: import function_app", f"{out['import_s']:.2f} s", "–", None, "–", load),
        Row("cold start: first Graph call (Graph at 100 ms)", f"{out['first_graph_call_s']:.3f} s",
            f"{rt / 1000:.2f} s", ratio(rt / 1000, out["first_graph_call_s"]), "≤ 0.3 s", load),
    ]
    report.rows += rows


def inbound(report: Report) -> None:
    [out], load = run_module("bench.inbound")
    report.figures["inbound"] = out | {"loadavg": load}
    bound_ms = COALESCE_S * 1000 + 100 + 100  # gather, one delta read, one blocker write
    report.rows += [
        Row("inbound: 100 changes in one room, p50 / p95",
            f"{out['latency_ms_p50']:.0f} / {out['latency_ms_p95']:.0f} ms",
            f"{bound_ms:.0f} ms (gather + delta read + blocker write)", ratio(bound_ms, out["latency_ms_p50"]),
            "–", load),
        Row("Table operations per inbound change", f"{out['table_ops_per_change']:.1f}", "5",
            ratio(5, out["table_ops_per_change"]), "≤ 5", load),
    ]


def big_room(report: Report, sizes: str) -> None:
    lines, load = run_module("bench.bigroom", "--sizes", sizes)
    report.figures["big_room"] = [line | {"loadavg": load} for line in lines]
    for out in lines:
        n = out["events"]
        report.rows += [
            Row(f"big room, {n} events: baseline (all blocked; the room run alone {out['baseline_room_run_s']:.1f} s)",
                f"{out['baseline_s']:.1f} s", f"{out['write_bound_s']:.1f} s anny writes ({out['anny_write_limit']})",
                ratio(max(out["write_bound_s"], out["read_bound_s"]), out["baseline_s"]), "–", load),
            Row(f"big room, {n} events: next day's run (window moved a day)", f"{out['daily_s']:.2f} s",
                "0.2 s (delta read + the new day's calendarView)", ratio(0.2, out["daily_s"]), "–", load),
            Row(f"big room, {n} events: that night's comparison of the whole window (delta + calendarView)",
                f"{out['nightly_census_s']:.2f} s", f"{out['read_bound_s'] + 0.1:.1f} s Graph read",
                ratio(out["read_bound_s"] + 0.1, out["nightly_census_s"]), "–", load),
            Row(f"big room, {n} events: next month's run (delta window rolls, room read again)",
                f"{out['monthly_s']:.1f} s", f"{out['read_bound_s']:.1f} s Graph read",
                ratio(out["read_bound_s"], out["monthly_s"]), "–", load),
            Row(f"big room, {n} events: one change", f"{out['per_change_s']:.2f} s", "0.2 s (delta read + write)",
                ratio(0.2, out["per_change_s"]), "–", load),
        ]


def initial(report: Report, rooms: list[int]) -> None:
    if importlib.util.find_spec("bench.initial") is None:
        report.figures["initial"] = "bench.initial is not part of this version"
        return
    report.figures["initial"] = []
    for count in rooms:
        [out], load = run_module("bench.initial", "--rooms", str(count))
        report.figures["initial"].append(out | {"loadavg": load})
        report.rows.append(Row(f"initial sync, {count} room(s)", f"{out['wall_s']:.1f} s", f"{out['bound_s']:.1f} s",
                               ratio(out["bound_s"], out["wall_s"]), "≥ 0.9", load))


def headline(report: Report) -> dict[str, Any]:
    out = report.figures.get("outbound", {})
    inbound_figures = report.figures.get("inbound", {})
    initial_runs = report.figures.get("initial")
    big = {line["events"]: line for line in report.figures.get("big_room", [])}
    first_big = big[min(big)] if big else {}
    return {
        "initial_bound_over_wall": initial_runs[-1]["bound_over_wall"] if isinstance(initial_runs, list)
        and initial_runs else None,
        "outbound_ms_p95": out.get("latency_ms_p95"),
        "outbound_steady_ms_p95": out.get("latency_steady_ms_p95"),
        "outbound_idle_ms_p95": out.get("idle_latency_ms_p95"),
        "outbound_shared_instance_ms_p95": out.get("shared_instance_latency_ms_p95"),
        "graph_round_trip_ms": out.get("graph_round_trip_ms"),
        "first_graph_call_s": out.get("first_graph_call_s"),
        "import_s": out.get("import_s"),
        "table_ops_per_outbound_change": out.get("table_ops_per_change"),
        "table_ops_per_inbound_change": inbound_figures.get("table_ops_per_change"),
        "cpu_ms_per_outbound_change": out.get("cpu_ms_per_change"),
        "cpu_ms_per_graph_write": out.get("cpu_ms_per_graph_write"),
        "cpu_ms_per_raw_httpx_write": out.get("cpu_ms_per_raw_httpx_write"),
        "cpu_ms_per_graph_write_one_at_a_time": out.get("cpu_ms_per_graph_write_one_at_a_time"),
        "delta_parse_ms_per_event": out.get("delta_parse_ms_per_event"),
        "big_room_events": first_big.get("events"),
        "big_room_daily_s": first_big.get("daily_s"),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "loaded": any(row.loaded for row in report.rows),
    }


def table(report: Report) -> str:
    lines = ["| what | measured | bound | ratio | target | loadavg |", "| --- | --- | --- | --- | --- | --- |"]
    for row in report.rows:
        load = " / ".join(f"{x:.1f}" for x in row.loadavg) + (" (loaded)" if row.loaded else "")
        shown = "–" if row.ratio is None else f"{row.ratio:.2f}"
        lines.append(f"| {row.what} | {row.measured} | {row.bound} | {shown} | {row.target} | {load} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", default="outbound,inbound,big-room,initial")
    parser.add_argument("--big-room-sizes", default="1000,5000")
    parser.add_argument("--initial-rooms", default="1,5,10")
    parser.add_argument("--out", default="bench-results.json")
    args = parser.parse_args()
    wanted = set(args.only.split(","))
    report = Report()
    started = time.perf_counter()
    if "outbound" in wanted:
        outbound(report)
    if "inbound" in wanted:
        inbound(report)
    if "big-room" in wanted:
        big_room(report, args.big_room_sizes)
    if "initial" in wanted:
        initial(report, [int(n) for n in args.initial_rooms.split(",")])
    line = headline(report)
    document = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
                "duration_s": round(time.perf_counter() - started, 1), "figures": report.figures,
                "table": table(report), "headline": line}
    with open(args.out, "w") as handle:
        json.dump(document, handle, indent=2)
    print(f"{document['date']} · {document['machine']}\n")
    print(table(report))
    print()
    print(json.dumps(line))


if __name__ == "__main__":
    main()
