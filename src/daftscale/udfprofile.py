"""Profile the user's real UDF on a sample: seconds per row, fixed seconds per call, memory per row.

:func:`profile_udf` builds the user's class once in this process (as one Daft actor would), warms it
up with one call, then times calls on batches of several sizes drawn from the sample and fits::

    seconds(n rows) = seconds_per_batch + seconds_per_row × n

by least squares over the per-size medians. The fixed part is what a bigger batch amortises (model
dispatch, tokenizer set-up, kernel launches); the per-row part is the real work. Both feed the planner's
batch-size choice (:func:`daftscale.plan.overhead_bounded_batch_size`), the simulator and the tuner.

Memory per row is measured in a separate pass, after the timing pass, because tracing slows Python
code and would distort the timings. For each batch size one call runs with:

- ``tracemalloc``: peak Python-heap bytes, NumPy arrays included (NumPy reports its buffers to it);
- a resident-memory sampler (a thread reading this process's RSS every millisecond): catches memory
  that bypasses the Python allocator, such as PyTorch CPU tensors and native libraries' buffers;
- when PyTorch with CUDA is in use, ``torch.cuda.max_memory_allocated`` (GPU memory is what bounds a
  GPU UDF's batch, so when the call allocated any, it is the figure reported).

The per-row figure is the slope of peak bytes over batch size (least squares, clipped at 0), so memory
the call needs whatever the batch size (model weights, workspace) is not charged to rows. A slope of 0
means no growth was measurable; the planner then falls back to the data's own size.

>>> import time
>>> class Sleeper:
...     def __call__(self, xs):
...         time.sleep(0.005 + 0.0005 * len(xs))
...         return xs
>>> p = profile_udf(Sleeper, list(range(64)), repeats=2, measure_memory=False)
>>> 3 <= p.seconds_per_batch * 1e3 < 15, 0.4 <= p.seconds_per_row * 1e3 < 1.0  # ≈ 5 ms + 0.5 ms per row
(True, True)

(Bounds, not the rounded figures: ``sleep`` only overshoots, and on a loaded machine by a millisecond
or more per call; a suite run beside the benchmark fitted 6 ms per call.)
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
import tracemalloc
from collections.abc import Mapping, Sequence
from typing import Any

from daftscale.config import require_positive_int
from daftscale.errors import ConfigError, ProfileError
from daftscale.fit import fit_line
from daftscale.profile import UdfProfile

# Timed calls per batch size; the median of these is fitted, so one slow call (a GC pause, another
# process on the core) does not move the result. 3 is the fewest with a meaningful median.
DEFAULT_REPEATS = 3

# Default batch sizes are the sample size and its halves down to this many steps: four sizes spanning
# 8× give the fit a long enough lever to separate fixed from per-row cost.
DEFAULT_SIZE_STEPS = 4

# How often the resident-memory sampler reads RSS during a memory-pass call. 1 ms catches short-lived
# tensors of a call lasting a few milliseconds without costing the call much.
RSS_SAMPLE_INTERVAL_S = 0.001

Sample = Any  # a sequence (one column), a mapping of column -> sequence, a daft.DataFrame or a pyarrow.Table


def fit_batch_costs(rows: Sequence[float], seconds: Sequence[float]) -> tuple[float, float]:
    """Least-squares fit ``seconds = fixed + per_row × rows``, both clipped at 0; returns ``(fixed, per_row)``.

    A negative slope (noise on a UDF whose cost does not grow with rows) becomes ``per_row = 0`` with the
    mean as fixed cost; a negative intercept becomes ``fixed = 0`` with the slope refitted through the origin.

    >>> fit_batch_costs([8, 16, 32, 64], [0.024, 0.028, 0.036, 0.052])   # 20 ms + 0.5 ms/row
    (0.02, 0.0005)
    >>> fit_batch_costs([10, 20], [0.010, 0.020])
    (0.0, 0.001)
    >>> fit_batch_costs([10], [0.010])   # one size: no intercept can be told apart
    (0.0, 0.001)
    """
    if len(rows) != len(seconds) or not rows:
        raise ConfigError("fit_batch_costs needs as many row counts as timings, at least one: pass matching lists")
    xs = [float(x) for x in rows]
    ys = [float(y) for y in seconds]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    line = fit_line(xs, ys)
    if line is None:
        # One distinct size: charge everything to rows (the conservative reading for throughput).
        return 0.0, (mean_y / mean_x if mean_x > 0 else 0.0)
    intercept, slope = line
    if slope < 0:
        return round(max(mean_y, 0.0), 12), 0.0
    if intercept < 0:
        sxx0 = sum(x * x for x in xs)
        return 0.0, round(max(sum(x * y for x, y in zip(xs, ys, strict=True)) / sxx0, 0.0), 12)
    return round(intercept, 12), round(slope, 12)


def profile_udf(
    cls: type,
    sample: Sample,
    *,
    method: str = "__call__",
    init_args: Sequence[Any] = (),
    init_kwargs: Mapping[str, Any] | None = None,
    batch_sizes: Sequence[int] | None = None,
    repeats: int = DEFAULT_REPEATS,
    columns: Sequence[str] | None = None,
    as_series: bool = False,
    measure_memory: bool = True,
) -> UdfProfile:
    """Time the user's UDF class on batches drawn from ``sample`` and return its :class:`UdfProfile`.

    The class is called as :func:`daftscale.udf.actor_udf` calls it: ``cls(*init_args, **init_kwargs)``
    once, then ``getattr(instance, method)(*column_lists)`` with one Python list per column (or one
    ``daft.Series`` per column with ``as_series=True``).

    Args:
        cls: the plain user class (not the Daft UDF).
        sample: the UDF's input rows: a list (one column), a mapping of column name to list, a
            ``daft.DataFrame`` or a ``pyarrow.Table`` (all columns, in order, unless ``columns`` is given).
            A few hundred rows are plenty; the sample is read into memory.
        method: the method Daft calls.
        init_args, init_kwargs: arguments for the constructor.
        batch_sizes: rows per timed call; default the sample size and its halves (4 sizes). Sizes
            above the sample size reuse rows cyclically.
        repeats: timed calls per size (the median is fitted).
        columns: which columns of a mapping / DataFrame / Table to pass, in order.
        as_series: pass ``daft.Series`` instead of lists, as ``actor_udf(..., as_series=True)`` does.
        measure_memory: run the memory pass (one extra call per size under tracing).

    Raises:
        ConfigError: an empty sample, a bad batch size or repeat count, a missing method.
        ProfileError: the class fails to build, or a call raises or returns the wrong number of rows.
    """
    if not isinstance(cls, type):
        raise ConfigError(f"profile_udf needs the UDF class, got {type(cls).__name__}: pass the class itself")
    if not callable(getattr(cls, method, None)):
        raise ConfigError(f"{cls.__name__} has no method {method!r}: define it or pass method=")
    repeats = require_positive_int(repeats, "repeats")
    column_values = _columns_of(sample, columns)
    n_sample = len(column_values[0])
    if n_sample == 0:
        raise ConfigError("the UDF sample is empty: pass a few hundred rows of the UDF's real input")
    sizes = _batch_sizes(n_sample, batch_sizes)

    try:
        instance = cls(*tuple(init_args), **dict(init_kwargs or {}))
    except Exception as exc:  # the user's constructor: anything can go wrong there
        raise ProfileError(
            f"{cls.__name__}() failed while profiling: {type(exc).__name__}: {exc}: fix the class's __init__"
        ) from exc
    call = getattr(instance, method)
    batches = {size: _batch(column_values, size, offset=i * 7919, as_series=as_series) for i, size in enumerate(sizes)}

    def timed(size: int) -> float:
        args = batches[size]
        started = time.perf_counter()
        try:
            result = call(*args)
        except Exception as exc:
            raise ProfileError(
                f"{cls.__name__}.{method} failed on a batch of {size} rows: {type(exc).__name__}: {exc}: "
                "fix the UDF, or profile it on rows it accepts"
            ) from exc
        _synchronize()
        elapsed = time.perf_counter() - started
        _check_length(result, size, cls.__name__, method)
        return elapsed

    # Warm-up: first calls pay one-off costs (lazy imports, JIT, allocator growth, kernel selection)
    # that an actor pays once per lifetime, not per batch; the largest size warms the most.
    timed(sizes[-1])
    medians = []
    for size in sizes:
        medians.append(statistics.median(timed(size) for _ in range(repeats)))
    fixed, per_row = fit_batch_costs(sizes, medians)

    memory_per_row = _memory_per_row(call, batches, sizes) if measure_memory else None
    return UdfProfile(
        seconds_per_row=per_row,
        seconds_per_batch=fixed,
        memory_per_row_bytes=memory_per_row,
        rows_sampled=sum(sizes) * repeats,
        batches=len(sizes) * repeats,
    )


# ---------------------------------------------------------------------------------------------------
# Sample handling


def _columns_of(sample: Sample, columns: Sequence[str] | None) -> list[list[Any]]:
    """The sample as one Python list per UDF argument, all of equal length."""
    if sample is None:
        raise ConfigError("the UDF sample is empty: pass a few hundred rows of the UDF's real input")
    table: dict[str, list[Any]] | None = None
    if _is_daft_dataframe(sample):
        table = sample.to_pydict()
    elif _is_arrow_table(sample):
        table = sample.to_pydict()
    elif isinstance(sample, Mapping):
        table = {str(k): list(v) for k, v in sample.items()}
    if table is not None:
        names = list(columns) if columns else list(table)
        missing = [c for c in names if c not in table]
        if missing:
            raise ConfigError(
                f"column(s) {', '.join(missing)} not in the UDF sample: choose from {', '.join(table) or 'none'}"
            )
        if not names:
            raise ConfigError("the UDF sample has no columns: pass the columns the UDF reads")
        values = [list(table[c]) for c in names]
        if len({len(v) for v in values}) > 1:
            raise ConfigError("the UDF sample's columns have different lengths: pass equal-length columns")
        return values
    if columns:
        raise ConfigError("columns= needs a mapping, DataFrame or Table sample: drop it for a plain list")
    if isinstance(sample, (str, bytes)) or not hasattr(sample, "__iter__"):
        raise ConfigError(
            f"cannot read a UDF sample from {type(sample).__name__}: pass a list of rows, a dict of columns, "
            "a daft.DataFrame or a pyarrow.Table"
        )
    return [list(sample)]


def _is_daft_dataframe(obj: Any) -> bool:
    daft = sys.modules.get("daft")
    return daft is not None and isinstance(obj, daft.DataFrame)


def _is_arrow_table(obj: Any) -> bool:
    pa = sys.modules.get("pyarrow")
    return pa is not None and isinstance(obj, pa.Table)


def _batch_sizes(n_sample: int, requested: Sequence[int] | None) -> list[int]:
    if requested is not None:
        sizes = sorted({require_positive_int(s, "batch_sizes") for s in requested})
        if not sizes:
            raise ConfigError("batch_sizes is empty: pass at least two sizes, e.g. [16, 64]")
        return sizes
    sizes = sorted({max(1, n_sample >> step) for step in range(DEFAULT_SIZE_STEPS)})
    if len(sizes) == 1:
        # A one-row sample: reuse the row so the fit still sees two sizes.
        sizes = [1, 2]
    return sizes


def _batch(columns: list[list[Any]], size: int, *, offset: int, as_series: bool) -> tuple[Any, ...]:
    """``size`` rows from each column starting at ``offset``, wrapping around the sample."""
    n = len(columns[0])
    picks = [(offset + i) % n for i in range(size)]
    lists = [[column[i] for i in picks] for column in columns]
    if not as_series:
        return tuple(lists)
    import daft

    return tuple(daft.Series.from_pylist(values) for values in lists)


def _check_length(result: Any, rows: int, name: str, method: str) -> None:
    try:
        returned = len(result)
    except TypeError:
        return  # Daft will check what it cannot size here (a scalar broadcast, an iterator...)
    if returned != rows:
        raise ProfileError(
            f"{name}.{method} returned {returned} values for {rows} rows: return one value per input row"
        )


# ---------------------------------------------------------------------------------------------------
# Measurement helpers


def _torch_cuda() -> Any:
    """The ``torch.cuda`` module when the UDF could be using a GPU, else ``None`` (never imports torch)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        return torch.cuda if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    except Exception:  # a broken CUDA install must not break CPU profiling
        return None


def _synchronize() -> None:
    # CUDA kernels run asynchronously: without a sync the timer would stop before the GPU finished.
    cuda = _torch_cuda()
    if cuda is not None:
        cuda.synchronize()


def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


class _RssPeak:
    """Peak resident memory of this process while the block runs, sampled from a thread."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss())
            self._stop.wait(RSS_SAMPLE_INTERVAL_S)

    def __enter__(self) -> _RssPeak:
        self.peak = _rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())


def _memory_per_row(call: Any, batches: dict[int, tuple[Any, ...]], sizes: list[int]) -> float:
    """Slope of the call's peak extra memory over batch size (bytes per row, ≥ 0); see the module doc."""
    import gc

    host_peaks: list[float] = []
    gpu_peaks: list[float] = []
    cuda = _torch_cuda()
    for size in sizes:
        gc.collect()
        if cuda is not None:
            cuda.reset_peak_memory_stats()
            gpu_base = cuda.memory_allocated()
        before = _rss()
        tracemalloc.start()
        try:
            with _RssPeak() as rss:
                result = call(*batches[size])
                _synchronize()
            _, traced_peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        del result
        # tracemalloc sees Python and NumPy allocations exactly; RSS sees native ones (torch CPU tensors)
        # coarsely. Their maximum is the call's footprint as well as either can tell.
        host_peaks.append(float(max(traced_peak, rss.peak - before)))
        if cuda is not None:
            gpu_peaks.append(float(cuda.max_memory_allocated() - gpu_base))
    peaks = gpu_peaks if gpu_peaks and max(gpu_peaks) > 0 else host_peaks
    _, per_row = fit_batch_costs(sizes, peaks)
    return per_row
