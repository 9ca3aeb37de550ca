"""Probe: how the scan's task size moves the first UDF call of a streaming plan (W2's files).

``python -m bench.probes.scan_tasks [--scale 1] [--repeats 2]`` starts the bench's 4 × 4 local cluster
and runs W2 (``--quick`` size times ``--scale``) with daftscale's streaming plan (the balance rule's
batch, ``into_batches(B × A)``) under several scan settings: Daft's default (one scan task per file),
split/merge toward large scan tasks (the seed's 1 GiB partitions, at least a quarter of that), and
split/merge toward small ones. It prints wall time, first call, the calls' span and utilisation.
A probe, not the benchmark (``python -m bench`` is that).
"""

from __future__ import annotations

from typing import Any

from bench.probes.common import CONCURRENCY, CPUS_PER_NODE, NODES, bench_cluster, describe, parse_args, run_case
from bench.workloads import QUICK_SCALE, WORKLOADS
from daftscale.plan import balanced_batch_size, overhead_bounded_batch_size

MIB = 1 << 20


def _split(max_bytes: int) -> dict[str, Any]:
    return {
        "enable_scan_task_split_and_merge": True,
        "scan_tasks_max_size_bytes": max_bytes,
        "scan_tasks_min_size_bytes": max(1, max_bytes // 4),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(__doc__, "python -m bench.probes.scan_tasks", argv, default_scale=1.0)
    w2 = WORKLOADS["W2"].scaled(QUICK_SCALE["W2"] * args.scale)
    concurrency, nodes = CONCURRENCY, NODES
    fixed, per_row = w2.model.fixed_s, w2.model.per_row_s
    batch = max(overhead_bounded_batch_size(fixed, per_row), balanced_batch_size(fixed, per_row, w2.rows / concurrency))
    task_rows = batch * concurrency // nodes
    cases = {
        "one scan task per file (Daft's default)": {},
        "split/merge toward 1 GiB (min 256 MiB)": _split(1 << 30),
        "split/merge toward 64 MiB (min 16 MiB)": _split(64 * MIB),
        "split/merge toward 16 MiB (min 4 MiB)": _split(16 * MIB),
    }
    with bench_cluster(args.out) as bench:
        files = bench.files(w2)
        ideal = w2.ideal_s(concurrency, NODES * CPUS_PER_NODE)
        print(f"W2 × {args.scale:g}: {w2.rows:,} rows, B = {batch}, into_batches({task_rows}), ideal {ideal:.1f} s")
        for repeat in range(args.repeats):
            for name, config in cases.items():
                m = run_case(bench, w2, files, lambda df: df.into_batches(task_rows), batch, config)
                print(f"[{repeat}] {name:42s} {describe(m, ideal)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
