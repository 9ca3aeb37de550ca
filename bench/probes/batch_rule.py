"""Probe: the planner's two batch-size rules side by side on a long stage (W2's files, scaled up).

``python -m bench.probes.batch_rule [--scale 8] [--repeats 2]`` starts the bench's 4 × 4 local cluster
and runs W2 at ``--scale`` times its quick size (8: 192,000 rows, an ideal of 48 s) with the stand-in
model, once with the overhead target's batch (``overhead_bounded_batch_size``: fixed cost ≤ 10 % of a
call) and once with the balance rule's (``balanced_batch_size``: sqrt(2 × rows per actor × fixed / per
row)), each with the planner's own ``into_batches(B × A)`` tasks, interleaved. It prints wall time, first
call, the calls' span and utilisation. A probe to check one planner rule, not the benchmark
(``python -m bench`` is that).
"""

from __future__ import annotations

from bench.probes.common import CONCURRENCY, CPUS_PER_NODE, NODES, bench_cluster, describe, parse_args, run_case
from bench.workloads import QUICK_SCALE, WORKLOADS
from daftscale.plan import balanced_batch_size, overhead_bounded_batch_size


def main(argv: list[str] | None = None) -> int:
    args = parse_args(__doc__, "python -m bench.probes.batch_rule", argv, default_scale=8.0)
    w2 = WORKLOADS["W2"].scaled(QUICK_SCALE["W2"] * args.scale)
    concurrency, nodes = CONCURRENCY, NODES
    fixed, per_row = w2.model.fixed_s, w2.model.per_row_s  # the stand-in's true costs, as a profile measures them
    rules = {
        "overhead target (10 %)": overhead_bounded_batch_size(fixed, per_row),
        "balance rule": balanced_batch_size(fixed, per_row, w2.rows / concurrency),
    }
    with bench_cluster(args.out) as bench:
        files = bench.files(w2)
        ideal = w2.ideal_s(concurrency, NODES * CPUS_PER_NODE)
        print(f"W2 × {args.scale:g}: {w2.rows:,} rows, ideal {ideal:.1f} s", flush=True)
        for repeat in range(args.repeats):
            for name, batch in rules.items():
                m = run_case(bench, w2, files, lambda df, t=batch * concurrency // nodes: df.into_batches(t), batch)
                print(f"[{repeat}] {name:24s} B = {batch:4d}: {describe(m, ideal)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
