"""Defaults, each with the reason for its value, and the small parsers for user input."""

from __future__ import annotations

import math
import re

from daftscale.errors import ConfigError

# The seed's UDF batch size B ("Batch Size 64" in its worked example); used when the user gives none
# and no UDF profile says better.
DEFAULT_BATCH_SIZE = 64

# K, batches per actor per task: the seed recommends "~1000" partitions for 1M rows where formula 1
# allows 3906, i.e. each task carries about 4 batches for every actor on its node.
DEFAULT_BATCHES_PER_TASK = 4

# Streaming keeps partitions large: the seed's "Keep partitions large (e.g. 1GB+)".
DEFAULT_PARTITION_BYTES_TARGET = 1 << 30

# Daft's own estimate of in-memory size over Parquet file size (its parquet_inflation_factor default).
# Used for partitions and batches when no UDF profile measured memory per row.
DEFAULT_INFLATION = 3.0

# Share of a node's memory the planner lets in-flight partitions use; the rest is left to the Ray
# object store, the UDF actors and the OS. Ray's own object store default is 30 % of memory.
NODE_MEMORY_FRACTION_FOR_PARTITIONS = 0.5

# Share of an actor's memory budget one decoded batch may use: the model and its activations need the rest.
BATCH_MEMORY_FRACTION = 0.5

# Average uncompressed bytes per row at or above which data counts as heavy (streaming). 64 KiB is
# well above rows of paths, ids and metadata (tens to hundreds of bytes) and below a small JPEG.
HEAVY_BYTES_PER_ROW = 64 * 1024

# A list column averaging at least this many bytes per row is a tensor/embedding, hence heavy
# (a 384-float embedding is 1.5 KiB); short lists of tags or ids stay light.
HEAVY_LIST_BYTES_PER_ROW = 1024

# Target share of an actor's time spent on the UDF's fixed per-call cost when a UDF profile is known:
# at 10 % the batch is large enough that a bigger one buys little throughput.
TARGET_BATCH_OVERHEAD_SHARE = 0.10

# Daft's own cost per UDF call outside the UDF's body (the Ray actor call's round trip, handing the batch
# over as Arrow): the least per-call cost the planner chooses B from. A profile measured in-process
# (``profile_udf``) sees only the body, and a cheap per-row function can fit 0 there, which would plan B = 1:
# thousands of calls each paying this cost. Back-to-back calls on the bench's actors were 4-23 ms apart
# (bench run L, 2 cores), so 2 ms is a floor, not an estimate.
DAFT_SECONDS_PER_CALL_FLOOR = 0.002

# Without a UDF profile a batch below this many rows is flagged: per-call overhead of Python UDFs
# (serialisation, dispatch to the actor) is typically milliseconds.
MIN_SENSIBLE_BATCH_SIZE = 8

# How long to wait for a Ray address to answer before saying it is unreachable (SPEC: within 30 s).
RAY_CONNECT_TIMEOUT_S = 20.0

# The stall watchdog's floor: no run is called stalled sooner than this after its last progress (a UDF
# call started, finished or an actor became ready). A minute is well above the per-call times daftscale
# plans for (milliseconds to seconds) and far below the minutes a hung GPU run otherwise sits silent.
DEFAULT_STALL_TIMEOUT_S = 60.0

# The watchdog's limit is this many times the longest UDF call seen so far (and, before any call has
# finished, this many times the floor): a model whose calls take a minute is not stalled after one
# minute of silence, and a first call that loads weights or compiles kernels gets room to do so.
STALL_CALL_FACTOR = 5.0

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "ki": 1 << 10,
    "kib": 1 << 10,
    "mi": 1 << 20,
    "mib": 1 << 20,
    "gi": 1 << 30,
    "gib": 1 << 30,
    "ti": 1 << 40,
    "tib": 1 << 40,
}
_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_memory(value: str | int | float, *, name: str = "memory") -> int:
    """Parse a memory size such as ``"64GiB"``, ``"512MB"``, ``"1.5GiB"`` or a byte count into bytes.

    Binary units (KiB, MiB, GiB, TiB) are powers of 1024, decimal ones (KB, MB, GB, TB) powers of 1000.

    >>> parse_memory("64GiB")
    68719476736
    >>> parse_memory("512MB")
    512000000
    >>> parse_memory(1024)
    1024
    >>> parse_memory("12 parsecs")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    daftscale.errors.ConfigError: malformed memory size for --memory: '12 parsecs': write a number with a unit...
    """
    label = f"--{name.replace('_', '-')}"
    if isinstance(value, bool):
        raise ConfigError(f"malformed memory size for {label}: {value!r}: write a number with a unit, e.g. 64GiB")
    if isinstance(value, (int, float)):
        number, unit = float(value), ""
    else:
        match = _SIZE_RE.match(str(value))
        if not match or match.group(2).lower() not in _UNITS:
            raise ConfigError(
                f"malformed memory size for {label}: {value!r}: write a number with a unit, e.g. 64GiB, 512MiB or 2GB"
            )
        number, unit = float(match.group(1)), match.group(2).lower()
    size = number * _UNITS[unit]
    if not math.isfinite(size) or size < 1:
        raise ConfigError(f"{label} must be a positive size, got {value!r}: give at least 1 byte, e.g. 1GiB")
    return int(size)


def format_bytes(size: float | None) -> str:
    """Human-readable binary size.

    >>> format_bytes(1 << 30)
    '1.0 GiB'
    >>> format_bytes(1536)
    '1.5 KiB'
    >>> format_bytes(12)
    '12 B'
    """
    if size is None:
        return "unknown"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def require_positive_int(value: object, name: str) -> int:
    """Check a count (rows, nodes, concurrency, batch size) is a positive integer.

    >>> require_positive_int(64, "batch_size")
    64
    >>> require_positive_int(0, "batch_size")
    Traceback (most recent call last):
    ...
    daftscale.errors.ConfigError: --batch-size must be a positive integer, got 0: pass a value of 1 or more
    """
    label = f"--{name.replace('_', '-')}"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < 1:
        raise ConfigError(f"{label} must be a positive integer, got {value!r}: pass a value of 1 or more")
    return int(value)


def require_positive_number(value: object, name: str, *, allow_zero: bool = False) -> float:
    """Check a quantity (CPUs, GPUs, bytes per row) is a finite number above zero (or zero if allowed).

    >>> require_positive_number(0.5, "udf_gpus")
    0.5
    >>> require_positive_number(-1, "udf_gpus", allow_zero=True)
    Traceback (most recent call last):
    ...
    daftscale.errors.ConfigError: --udf-gpus must be zero or more, got -1: pass a value of 0 or more
    """
    label = f"--{name.replace('_', '-')}"
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if allow_zero:
        if not ok or value < 0:  # type: ignore[operator]
            raise ConfigError(f"{label} must be zero or more, got {value!r}: pass a value of 0 or more")
    elif not ok or value <= 0:  # type: ignore[operator]
        raise ConfigError(f"{label} must be a positive number, got {value!r}: pass a value above 0")
    return float(value)  # type: ignore[arg-type]


# The demo's rows: enough that calibration measures the model on a 5 % sample (a job under ten times its
# sample is too small to sample, and is planned with nothing measured), few enough to finish in
# seconds. Here, not in demo.py, so the CLI's help reads it without importing Daft.
DEFAULT_DEMO_ROWS = 12_000
