"""One local multi-node Ray cluster for the whole test session (doctests included).

Starting Ray costs seconds, and Daft locks its runner on first use, so the cluster starts once,
before anything executes a DataFrame, and every in-process test runs on the Ray runner. Tests of the
native runner run ``daftscale`` in a subprocess, as a user would.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

# tests/scripts holds plain Daft scripts that the tests run as users would: importing one (as
# --doctest-modules would) runs its job, so pytest must not collect them.
collect_ignore_glob = ["tests/scripts/*"]

# Nodes × logical CPUs of the shared test cluster: 2 × 2 is the smallest cluster where placement
# across nodes matters, and fits the CI machine (2 real cores).
TEST_CLUSTER_NODES = 2
TEST_CLUSTER_CPUS = 2


def pytest_collection_finish(session: pytest.Session) -> None:
    """Ray workers cannot import test modules, so classes defined in them travel by value (as a
    pipeline file's do)."""
    import sys

    import ray.cloudpickle
    from daft.pickle import cloudpickle as daft_cloudpickle

    modules = {item.module.__name__ for item in session.items if getattr(item, "module", None) is not None}
    for name in modules:
        if name.startswith(("test_", "tests.")) and name in sys.modules:
            daft_cloudpickle.register_pickle_by_value(sys.modules[name])
            ray.cloudpickle.register_pickle_by_value(sys.modules[name])


@pytest.fixture(scope="session", autouse=True)
def ray_cluster() -> Iterator[object]:
    import daft

    from daftscale.cluster import start_local_cluster

    os.environ.setdefault("DAFT_PROGRESS_BAR", "0")
    cluster = start_local_cluster(TEST_CLUSTER_NODES, TEST_CLUSTER_CPUS)
    daft.set_runner_ray(address=cluster.address, noop_if_initialized=True)
    try:
        yield cluster
    finally:
        cluster.shutdown()
