"""``python -m bench``: every workload under every configuration, one Ray cluster, one run.

Writes ``results.json`` (every run, and one summary row per workload × config), ``results.md`` (the
table) and ``results.png`` (the plot) into ``--out`` (default ``bench/out``). See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from typing import Any

from bench.configs import CONFIGS, DEFAULT_CONFIGS, PEERS, QUICK_TUNE_BUDGET_S, TUNE_BUDGET_S
from bench.harness import (
    Bench,
    register_by_value,
    start_cluster,
)
from bench.predict import attach, predict_workload
from bench.report import targets
from bench.summary import schedule, summarize
from bench.workloads import QUICK_SCALE, WORKLOADS, Costs, Workload

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller workloads and 2 repeats (30-40 min here)")
    parser.add_argument("--repeats", type=int, default=None, help="runs per workload × config (default 3; quick 2)")
    parser.add_argument("--out", default=DEFAULT_OUT, help="output directory (default bench/out)")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated, e.g. W1,W3")
    parser.add_argument(
        "--configs",
        default=",".join(DEFAULT_CONFIGS),
        help="comma-separated, from: " + ", ".join(CONFIGS) + " (default: all but daftscale-tuned)",
    )
    parser.add_argument("--nodes", type=int, default=4, help="local Ray nodes (default 4)")
    parser.add_argument("--cpus-per-node", type=int, default=4, help="logical CPUs per node (default 4)")
    parser.add_argument("--concurrency", type=int, default=8, help="UDF actors for every configuration (default 8)")
    parser.add_argument("--scale", type=float, default=None, help="multiply every workload's rows (after --quick)")
    parser.add_argument(
        "--repredict",
        action="store_true",
        help="run nothing: redo the simulator's predictions in --out's results from its saved run reports",
    )
    args = parser.parse_args(argv)
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    for name in args.workloads:
        if name not in WORKLOADS:
            parser.error(f"unknown workload {name!r}: pick from {', '.join(WORKLOADS)}")
    for name in args.configs:
        if name not in CONFIGS:
            parser.error(f"unknown configuration {name!r}: pick from {', '.join(CONFIGS)}")
    if args.repeats is None:
        args.repeats = 2 if args.quick else 3
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def selected_workloads(args: argparse.Namespace) -> dict[str, Any]:
    chosen = {}
    for name in args.workloads:
        workload = WORKLOADS[name]
        if args.quick:
            workload = workload.scaled(QUICK_SCALE.get(name, 1.0))
        if args.scale:
            workload = workload.scaled(args.scale)
        chosen[name] = workload
    return chosen


def run_bench(
    workloads: dict[str, Any],
    configs: list[str],
    repeats: int,
    out_dir: str,
    *,
    concurrency: int,
    task_slots: int,
    log: Any = print,
    warm_up: bool = True,
    tune_budget_s: float = TUNE_BUDGET_S,
) -> dict[str, Any]:
    """Run the schedule on the Ray cluster this process is connected to; returns the results document."""
    register_by_value()
    bench = Bench(out_dir, concurrency=concurrency, task_slots=task_slots, log=log, tune_budget_s=tune_budget_s)
    for workload in workloads.values():
        bench.files(workload)
    # A real model's costs (W7) are measured once, before any run: they set its ideal bound.
    workloads = {name: bench.measured(w) for name, w in workloads.items()}
    fixed: list[float] = []
    if warm_up:
        warm = time.time()
        bench.warm_up()
        log(f"warm-up queries (not measured): {time.time() - warm:.1f}s")
        fixed = bench.fixed_start()
        log(f"fixed start (a query with the actor pool and no work): {fixed} s")
    fixed_start_s = statistics.median(fixed) if fixed else None
    rows = []
    reports: dict[str, dict[str, dict[str, Any]]] = {}
    order = schedule(workloads, configs, repeats)
    started = time.time()
    for i, (name, config, repeat) in enumerate(order, 1):
        row = bench.run(workloads[name], config, repeat)
        report = row.pop("_report", None)
        if report is not None:
            reports.setdefault(name, {}).setdefault(config, report)
            save_report(report, os.path.join(out_dir, "reports", f"{name}-{config}-{repeat}.json"))
        rows.append(row)
        extra = f" {row['status']}: {row['error']}" if row["status"] != "ok" else ""
        log(
            f"[{i}/{len(order)} {time.time() - started:6.0f}s] {name} {config:22s} repeat {repeat}: "
            f"wall {row['wall_s']:7.2f}s ideal {row['ideal_s']:.2f}s "
            f"rows out {row['rows_out']}/{row['rows_out_expected']} "
            f"util {row.get('actor_utilization', 0):.2f} batch {row.get('mean_batch_rows')}{extra}"
            + (f" prep {row['prep_s']:.2f}s" if row.get("prep_s") else "")
        )
    predict_all(workloads, rows, reports, log)
    summary = summarize(rows, fixed_start_s)
    return {
        "meta": {
            "concurrency": concurrency,
            "task_slots": task_slots,
            "repeats": repeats,
            "workloads": {k: w.describe() for k, w in workloads.items()},
            "configs": configs,
            "elapsed_s": round(time.time() - started, 1),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "ideal_formula": "ideal_s = R × read.per_row_s / task_slots + R × model.per_row_s / concurrency "
            "(R: the rows the UDF sees)",
            "tune_budget_s": tune_budget_s,
            "fixed_start_s": fixed_start_s,
            "fixed_start_all_s": fixed,
            "notes": bench.notes,
        },
        "summary": summary,
        "targets": targets(summary, fixed_start_s, PEERS),
        "runs": rows,
    }


def predict_all(
    workloads: dict[str, Any], rows: list[dict[str, Any]], reports: dict[str, dict[str, dict[str, Any]]], log: Any
) -> None:
    """Attach the simulator's ``predicted_wall_s`` to every row, calibrated per workload from its first
    ``daftscale`` run report."""
    for name, found in reports.items():
        if "daftscale" not in found or name not in workloads:
            continue
        mine = [r for r in rows if r["workload"] == name]
        workload = workloads[name]
        if not workload.simulated:
            log(f"{name}: not predicted (the simulator models no join, explode or groupby)")
            continue
        # The read step's cost is not in a run report (the UDF calls are): the daftscale rows carry its profile.
        read = next((r["read_seconds_per_row"] for r in mine if r.get("read_seconds_per_row")), None)
        try:
            predictions = predict_workload(
                found,
                mine,
                kind=workload.kind,
                file_rows=list(workload.file_rows),
                row_group_rows=workload.row_group_rows,
                pre_udf_seconds_per_row=read,
            )
        except Exception as exc:  # a prediction that fails is reported, never fatal to the bench
            log(f"{name}: no prediction ({type(exc).__name__}: {exc})")
            continue
        attach(mine, predictions)


def repredict(out_dir: str, log: Any = print) -> dict[str, Any]:
    """Predict again from a finished run's ``results.json`` and saved reports (after a simulator change):
    the measurements stay as they were, only ``predicted_wall_s`` and the summary are redone."""
    with open(os.path.join(out_dir, "results.json")) as handle:
        doc = json.load(handle)
    workloads = {name: Workload(**_workload_fields(w)) for name, w in doc["meta"]["workloads"].items()}
    reports: dict[str, dict[str, dict[str, Any]]] = {}
    for row in sorted(doc["runs"], key=lambda r: r["repeat"]):
        path = os.path.join(out_dir, "reports", f"{row['workload']}-{row['config']}-{row['repeat']}.json")
        if os.path.exists(path):
            with open(path) as handle:
                reports.setdefault(row["workload"], {}).setdefault(row["config"], json.load(handle))
    predict_all(workloads, doc["runs"], reports, log)
    doc["summary"] = summarize(doc["runs"], doc["meta"].get("fixed_start_s"))
    doc["targets"] = targets(doc["summary"], doc["meta"].get("fixed_start_s"), PEERS)
    return doc


def _workload_fields(data: dict[str, Any]) -> dict[str, Any]:
    """A :class:`Workload`'s constructor arguments from its ``describe()`` output."""
    fields = {k: v for k, v in data.items() if k in Workload.__dataclass_fields__}
    fields["file_rows"] = tuple(fields["file_rows"])
    fields["profile_batch_sizes"] = tuple(fields.get("profile_batch_sizes") or ())
    if "chunks_per_doc" in fields:
        fields["chunks_per_doc"] = tuple(fields["chunks_per_doc"])
    for key in ("model", "read"):
        if fields.get(key) is not None:
            fields[key] = Costs(**fields[key])
    return fields


def save_report(report: dict[str, Any], path: str) -> None:
    """One run report as JSON (what ``daftscale run --report`` writes), for calibrating later."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        json.dump(report, handle, default=str)


def write_outputs(doc: dict[str, Any], out_dir: str) -> dict[str, str]:
    from bench.report import render_markdown, render_plot

    os.makedirs(out_dir, exist_ok=True)
    paths = {
        "json": os.path.join(out_dir, "results.json"),
        "md": os.path.join(out_dir, "results.md"),
        "png": os.path.join(out_dir, "results.png"),
    }
    for key, text in (("json", json.dumps(doc, indent=2, default=str)), ("md", render_markdown(doc))):
        tmp = paths[key] + ".tmp"
        with open(tmp, "w") as handle:
            handle.write(text)
        os.replace(tmp, paths[key])
    render_plot(doc, paths["png"])
    return paths


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.repredict:
        try:
            doc = repredict(args.out)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # A missing, partial or foreign results.json is bad input: one line, exit 2, no traceback.
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else f"{type(exc).__name__}: {exc}"
            print(
                f"python -m bench: error: cannot re-predict from {args.out} ({why}): pass --out with the "
                "directory of a finished bench run (it holds results.json and reports/)",
                file=sys.stderr,
            )
            return 2
        paths = write_outputs(doc, args.out)
        print(f"wrote {paths['json']}, {paths['md']}, {paths['png']}")
        return 0
    os.environ.setdefault("DAFT_PROGRESS_BAR", "0")
    workloads = selected_workloads(args)
    slots = args.nodes * args.cpus_per_node
    if args.concurrency >= slots:
        print(f"--concurrency {args.concurrency} leaves no CPU for tasks on {slots} CPUs: lower it", file=sys.stderr)
        return 2

    def log(text: str) -> None:
        print(text, flush=True)

    log(
        f"bench: {len(workloads)} workloads × {len(args.configs)} configs × {args.repeats} repeats on "
        f"{args.nodes}×{args.cpus_per_node} local Ray nodes, {args.concurrency} actors; out {args.out}"
    )
    with start_cluster(args.nodes, args.cpus_per_node):
        doc = run_bench(
            workloads,
            args.configs,
            args.repeats,
            args.out,
            concurrency=args.concurrency,
            task_slots=slots,
            log=log,
            tune_budget_s=QUICK_TUNE_BUDGET_S if args.quick else TUNE_BUDGET_S,
        )
    doc["meta"]["cluster"] = f"{args.nodes}x{args.cpus_per_node}"
    doc["meta"]["quick"] = args.quick
    paths = write_outputs(doc, args.out)
    with open(paths["md"]) as handle:
        log(handle.read())
    log(f"wrote {paths['json']}, {paths['md']}, {paths['png']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
