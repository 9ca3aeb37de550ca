"""Fault injection, a documented test hook: break a measurement path on purpose, so tests can check that
the run report owns up to what it could not measure instead of showing a clean success.

Set ``DAFTSCALE_FAULTS`` in the driver's environment to a comma-separated list of:

- ``drop-records``: every second UDF call record fails to reach the collector, as when the collector's
  Ray actor does not answer in time (the batches themselves run normally);
- ``memory-sampler``: every resident-memory sample raises, as when the process table cannot be read;
- ``snapshot``: the driver's reads of the call records raise, as when the collector is gone.

The driver reads the variable once per run and hands the faults to UDF actors and node samplers in their
specs: Ray workers do not share the driver's environment. Unset (the default), nothing changes.
"""

from __future__ import annotations

import os

FAULTS_ENV = "DAFTSCALE_FAULTS"
KNOWN_FAULTS = ("drop-records", "memory-sampler", "snapshot")


class InjectedFault(RuntimeError):
    """Raised where a fault named in ``DAFTSCALE_FAULTS`` breaks a measurement on purpose."""


def active() -> frozenset[str]:
    """The faults named in ``DAFTSCALE_FAULTS`` (unknown names are ignored: a typo injects nothing).

    >>> os.environ[FAULTS_ENV] = "snapshot, nonsense"
    >>> sorted(active())
    ['snapshot']
    >>> del os.environ[FAULTS_ENV]
    >>> active()
    frozenset()
    """
    names = {name.strip() for name in os.environ.get(FAULTS_ENV, "").split(",")}
    return frozenset(names & set(KNOWN_FAULTS))
