"""Pytest fixtures for tests that run against a real local SLURM cluster (root only)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Make `import cluster` work whatever pytest's import mode or package layout.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from cluster import ClusterUnavailable, LocalSlurmCluster, pid_alive  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``slurm`` marker."""
    config.addinivalue_line("markers", "slurm: needs a real local SLURM cluster (root)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses the ``slurm_cluster`` fixture with ``slurm``."""
    for item in items:
        if "slurm_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slurm)


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[LocalSlurmCluster]:
    """One real 2-node SLURM cluster for the whole session; skipped where unavailable."""
    if os.geteuid() != 0:
        pytest.skip("a local slurm cluster needs root")
    cluster = LocalSlurmCluster()
    try:
        cluster.start()
    except ClusterUnavailable as exc:
        pytest.skip(f"slurm cluster unavailable: {exc.reason}")
    pids = cluster.daemon_pids
    try:
        yield cluster
    finally:
        cluster.stop()
        cluster.stop()  # idempotent: a second stop is a no-op
        alive = {name: pid for name, pid in pids.items() if pid_alive(pid)}
        assert not alive, f"slurm daemons still alive after stop(): {alive}"
        assert not cluster.leftover_pids(), "processes of the cluster left behind"
