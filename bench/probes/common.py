"""What every probe does per case: build the workload's DataFrame with one scaling step and UDF batch, run it
on the bench's cluster under an execution config, and measure it as the benchmark does."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

from bench.harness import Bench, Sizing, count_partitions, measure, register_by_value, start_cluster
from bench.workloads import SleepModel, Workload, build_daft, model_args

NODES, CPUS_PER_NODE, CONCURRENCY = 4, 4, 8  # the benchmark's cluster and actor pool


def parse_args(
    module_doc: str, prog: str, argv: list[str] | None, *, default_scale: float, workloads: str | None = None
) -> argparse.Namespace:
    """``--scale`` (times the quick size), ``--repeats`` and ``--out``, the options every probe takes, and
    ``--workloads`` (a comma-separated list, parsed into ``args.workloads``) for probes given a default."""
    from bench.workloads import WORKLOADS

    parser = argparse.ArgumentParser(prog=prog, description=module_doc.splitlines()[0])
    parser.add_argument(
        "--scale", type=float, default=default_scale, help=f"times the quick size (default {default_scale:g})"
    )
    if workloads is not None:
        parser.add_argument("--workloads", default=workloads, help=f"comma-separated (default {workloads})")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.dirname(__file__)), "out"))
    args = parser.parse_args(argv)
    if not args.scale > 0:
        parser.error(f"--scale must be above 0, got {args.scale:g}: e.g. {default_scale:g}")
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}: e.g. 2")
    if workloads is not None:
        names = [n.strip().upper() for n in args.workloads.split(",") if n.strip()]
        unknown = [n for n in names if n not in WORKLOADS]
        if not names or unknown:
            parser.error(
                f"--workloads {args.workloads!r}: unknown {', '.join(unknown) or 'empty'}: "
                f"choose from {', '.join(WORKLOADS)}"
            )
        args.workloads = names
    os.environ.setdefault("DAFT_PROGRESS_BAR", "0")
    return args


@contextlib.contextmanager
def bench_cluster(out: str) -> Iterator[Bench]:
    """The benchmark's local cluster, warmed up as the benchmark does, for the probe's runs."""
    with start_cluster(NODES, CPUS_PER_NODE):
        register_by_value()
        bench = Bench(out, concurrency=CONCURRENCY, task_slots=NODES * CPUS_PER_NODE)
        bench.warm_up()
        yield bench


def run_case(
    bench: Bench,
    workload: Workload,
    files: list[str],
    scale: Callable[[Any], Any],
    batch: int,
    execution_config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One measured run: ``read → scale(df) → model`` with the UDF's ``batch_size=batch``."""
    import daft

    from daftscale.udf import actor_udf

    def build(_sink: Any) -> Any:
        model = actor_udf(
            SleepModel,
            Sizing(batch, bench.concurrency),
            return_dtype=daft.DataType.int64(),
            init_args=model_args(workload),
            name="Model",
        )
        return build_daft(workload, files, scale, model)

    def execute(df: Any) -> tuple[int, int]:
        with daft.execution_config_ctx(**(execution_config or {})):
            return count_partitions(df)

    bench.settle()
    return measure(execute, bench.concurrency, build)


def workload_at(bench: Bench, name: str, scale: float) -> tuple[Workload, Any, Any]:
    """Workload ``name`` at ``scale`` × its quick size with its files written, as a daftscale pipeline, and its
    UDF profile (as the benchmark's ``daftscale`` configuration measures it)."""
    from bench.harness import daftscale_pipeline
    from bench.workloads import QUICK_SCALE, WORKLOADS

    workload = WORKLOADS[name].scaled(QUICK_SCALE[name] * scale)
    pipe = daftscale_pipeline(workload, bench.files(workload))
    udf_profile, _ = bench.profiles(workload)
    return workload, pipe, udf_profile


def print_walls(title: str, columns: list[str], rows: dict[str, tuple[list[str], list[float]]], base: str) -> None:
    """A markdown table: per row its cells, every wall time and the median's ratio to row ``base``'s."""
    import statistics

    reference = statistics.median(rows[base][1])
    print(f"\n| {title} | {' | '.join(columns)} | wall s (each) | median × {base} |")
    print("|---|" + "---|" * len(columns) + "---|---:|")
    for name, (cells, walls) in rows.items():
        each = ", ".join(f"{w:.2f}" for w in walls)
        print(f"| {name} | {' | '.join(cells)} | {each} | {statistics.median(walls) / reference:.2f} |")
    print(flush=True)


def describe(m: dict[str, Any], ideal_s: float | None = None) -> str:
    """One line: wall, first call, the calls' span, utilisation, mean rows per call."""
    versus = f" ({m['wall_s'] / ideal_s:.2f}× ideal)" if ideal_s else ""
    return (
        f"wall {m['wall_s']:6.2f} s{versus}  first call {m['first_call_s']:5.2f} s  "
        f"calls' span {m['stage_span_s']:6.2f} s  util {m['actor_utilization']:.2f}  "
        f"mean rows/call {m['mean_batch_rows']:.0f}"
    )
