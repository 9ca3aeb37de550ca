"""The tune cache: a search's result kept under a key of everything that decides it.

Owns the key (the pipeline's source text, the data profile, the cluster's shape, the planner options and
the search settings), where entries live, reading one back, and the look-up made before a local cluster
starts (profiling in a short native-runner subprocess). Entries are written by :mod:`daftscale.tune`.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
from dataclasses import asdict
from typing import Any

from daftscale.cluster import ClusterSpec
from daftscale.errors import DaftscaleError
from daftscale.pipeline import Pipeline, load_pipeline, probe
from daftscale.profile import DataProfile
from daftscale.tune_result import TUNE_FORMAT_VERSION, TuneResult

# How long the native-runner subprocess that looks up the cache before a local cluster starts may take.
CACHE_PROBE_TIMEOUT_S = 120.0


def cache_dir(explicit: str | os.PathLike[str] | None = None) -> str:
    """``explicit``, else ``$DAFTSCALE_CACHE_DIR/tune``, else ``~/.cache/daftscale/tune``."""
    if explicit is not None:
        return os.fspath(explicit)
    root = os.environ.get("DAFTSCALE_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "daftscale")
    return os.path.join(root, "tune")


def pipeline_source(pipe: Pipeline) -> str:
    """The text that identifies a pipeline for the cache: its name, its file's source and its build function's."""
    parts = [pipe.name]
    if pipe.source and os.path.isfile(pipe.source):
        with contextlib.suppress(OSError), open(pipe.source, encoding="utf-8", errors="replace") as handle:
            parts.append(handle.read())
    with contextlib.suppress(OSError, TypeError):
        parts.append(inspect.getsource(pipe.build))
    return "\n".join(parts)


def jsonable(value: Any) -> Any:
    """``value`` as JSON-ready data for a cache key (dataclasses as dicts, dicts sorted, the rest by repr)."""
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in sorted(value.items())}
    return value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)


def cache_key(pipe: Pipeline, data: DataProfile, cluster: ClusterSpec, settings: dict[str, Any]) -> str:
    """Hash of the pipeline's source text, the data profile (rows, bytes, columns), the cluster's shape,
    the planner options and the search settings: equal inputs give an equal key."""
    payload = {
        "version": TUNE_FORMAT_VERSION,
        "pipeline": pipeline_source(pipe),
        "profile": {
            "rows": data.rows,
            "bytes_per_row": round(data.bytes_per_row, 3),
            "uncompressed_bytes": data.uncompressed_bytes,
            "columns": [[c.name, c.type, c.uncompressed_bytes, c.heavy] for c in data.columns],
        },
        "cluster": cluster.shape(),
        "settings": jsonable(settings),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def read_cache(path: str, budget_s: float) -> TuneResult | None:
    """The cached result at ``path`` if it answers a search with ``budget_s``, else None."""
    try:
        with open(path, encoding="utf-8") as handle:
            hit = TuneResult.from_dict(json.load(handle))
    except (OSError, ValueError, KeyError, TypeError, DaftscaleError):
        return None  # a missing, stale or damaged entry is simply made again
    if hit.budget_cut_s is not None and budget_s > hit.budget_cut_s:
        return None  # more budget than the cached search had: it may get further
    hit.cached, hit.cache_path = True, path
    return hit


def search_settings(
    kwargs: dict[str, Any],
    runner: str,
    sample: float,
    batch_multiples: tuple[float, ...],
    partition_multiples: tuple[float, ...],
    eta: int,
    max_candidates: int,
    measured_costs: bool = True,
) -> dict[str, Any]:
    """The search settings that change its result, for the cache key (the budget only limits it)."""
    return {
        "planner": kwargs,
        "sample": sample,
        "batch_multiples": batch_multiples,
        "partition_multiples": partition_multiples,
        "eta": eta,
        "max_candidates": max_candidates,
        "measured_costs": measured_costs,
        "runner": runner,
    }


def profile_file(path: str) -> dict[str, Any]:
    """The data profile at a pipeline file's scaling step, on Daft's native runner (run in a subprocess)."""
    import daft

    from daftscale.profile import profile_dataframe

    daft.set_runner_native()
    probed = probe(load_pipeline(path))
    return profile_dataframe(probed.scaling_input, parquet_paths=probed.parquet_paths).to_dict()


def cached_before_start(
    path: str,
    pipe: Pipeline,
    local_cluster: str | tuple[int, int],
    settings: dict[str, Any],
    root: Any,
    budget_s: float,
) -> TuneResult | None:
    """A cached result for a search on a local cluster, found without starting the cluster.

    Starting a local Ray cluster takes tens of seconds, and Daft's runner is locked per process, so the
    profile for the cache key is taken in a short native-runner subprocess; the cluster's shape is known
    from ``NxC``. Any failure or a profile that differs in the least just means no hit: the search then
    starts the cluster and profiles there as usual.
    """
    import subprocess
    import sys

    from daftscale.cluster import parse_local_cluster

    nodes, cpus = parse_local_cluster(local_cluster) if isinstance(local_cluster, str) else local_cluster
    code = (
        "import json, sys\nfrom daftscale.tune_cache import profile_file\nprint(json.dumps(profile_file(sys.argv[1])))"
    )
    env = {**os.environ, "DAFT_PROGRESS_BAR": "0"}
    env.pop("RAY_ADDRESS", None)
    try:
        done = subprocess.run(
            [sys.executable, "-c", code, os.path.abspath(path)],
            capture_output=True,
            text=True,
            timeout=CACHE_PROBE_TIMEOUT_S,
            env=env,
            check=True,
        )
        data = DataProfile.from_dict(json.loads(done.stdout.strip().splitlines()[-1]))
    except (OSError, subprocess.SubprocessError, ValueError, IndexError, TypeError, KeyError):
        return None
    shape = ClusterSpec(nodes=int(nodes), cpus_per_node=float(cpus), gpus_per_node=0.0)
    path_json = os.path.join(cache_dir(root), f"{cache_key(pipe, data, shape, settings)}.json")
    return read_cache(path_json, budget_s)


__all__ = [
    "CACHE_PROBE_TIMEOUT_S",
    "cache_dir",
    "cache_key",
    "cached_before_start",
    "jsonable",
    "pipeline_source",
    "profile_file",
    "read_cache",
    "search_settings",
]
