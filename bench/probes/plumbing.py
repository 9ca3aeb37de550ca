"""Probe: what W2's data costs to move through Daft and Ray, with and without the model's work.

``python -m bench.probes.plumbing [--repeats 2] [--out bench/out]`` starts the bench's 4 × 4 local
cluster, measures the fixed start (a query with the 8-actor pool and no work), then runs W2's files
(``--quick`` size) through a *zero-cost* model under several scaling steps, and the real model under
several ``into_batches`` sizes. It prints wall time, first UDF call and the calls' span for each. One
run, a few repeats: a probe to find where time goes, not a benchmark (``python -m bench`` is that).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from bench.harness import Bench, register_by_value, start_cluster
from bench.probes.common import run_case
from bench.workloads import QUICK_SCALE, WORKLOADS, Costs, Workload


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.probes.plumbing", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.dirname(__file__)), "out"))
    args = parser.parse_args(argv)
    os.environ.setdefault("DAFT_PROGRESS_BAR", "0")
    w2 = WORKLOADS["W2"].scaled(QUICK_SCALE["W2"])
    zero = replace(w2, model=Costs(0.0, 0.0))
    # The plan daftscale makes for W2 sets these scan options (partition target ~1 GiB).
    scan = {"enable_scan_task_split_and_merge": True, "scan_tasks_max_size_bytes": 1 << 30}
    cases: list[tuple[str, Workload, Callable[[Any], Any], dict[str, Any], bool]] = [
        ("zero-cost model, into_batches(182) + scan options", zero, lambda df: df.into_batches(182), scan, False),
        ("zero-cost model, into_batches(182)", zero, lambda df: df.into_batches(182), {}, False),
        ("zero-cost model, no scaling step", zero, lambda df: df, {}, False),
        ("zero-cost model, first file only, into_batches(182)", zero, lambda df: df.into_batches(182), {}, True),
        ("real model, into_batches(182)", w2, lambda df: df.into_batches(182), {}, False),
        ("real model, into_batches(364)", w2, lambda df: df.into_batches(364), {}, False),
        ("real model, into_batches(728)", w2, lambda df: df.into_batches(728), {}, False),
    ]
    # B = 91: the overhead target's batch for W2's model (the planner's before the balance rule).
    with start_cluster(4, 4):
        register_by_value()
        bench = Bench(args.out, concurrency=8, task_slots=16)
        bench.warm_up()
        print(f"fixed start (no-work query), s: {bench.fixed_start()}", flush=True)
        files = bench.files(w2)
        for repeat in range(args.repeats):
            for name, workload, scale, config, first_only in cases:
                m = run_case(bench, workload, files[:1] if first_only else files, scale, 91, config)
                print(
                    f"[{repeat}] {name:52s} wall {m['wall_s']:6.2f} s  first call {m['first_call_s']:5.2f} s  "
                    f"calls' span {m['stage_span_s']:5.2f} s  util {m['actor_utilization']:.2f}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
