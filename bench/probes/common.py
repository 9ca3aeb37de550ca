"""What every probe does per case: build the workload's DataFrame with one scaling step and UDF batch, run it
on the bench's cluster under an execution config, and measure it as the benchmark does."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.harness import Bench, _count_partitions, _measure, _Sizing
from bench.workloads import SleepModel, Workload, build_daft, model_args


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
            _Sizing(batch, bench.concurrency),
            return_dtype=daft.DataType.int64(),
            init_args=model_args(workload),
            name="Model",
        )
        return build_daft(workload, files, scale, model)

    def execute(df: Any) -> tuple[int, int]:
        with daft.execution_config_ctx(**(execution_config or {})):
            return _count_partitions(df)

    bench.settle()
    return _measure(execute, bench.concurrency, build)


def describe(m: dict[str, Any], ideal_s: float | None = None) -> str:
    """One line: wall, first call, the calls' span, utilisation, mean rows per call."""
    versus = f" ({m['wall_s'] / ideal_s:.2f}× ideal)" if ideal_s else ""
    return (
        f"wall {m['wall_s']:6.2f} s{versus}  first call {m['first_call_s']:5.2f} s  "
        f"calls' span {m['stage_span_s']:6.2f} s  util {m['actor_utilization']:.2f}  "
        f"mean rows/call {m['mean_batch_rows']:.0f}"
    )
