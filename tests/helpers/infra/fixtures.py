"""Pytest plugin: fixtures for a real S3 server (SeaweedFS) and a real local Ray cluster.

Enable with ``pytest_plugins = ["helpers.infra.fixtures"]`` in tests/conftest.py, or ``-p helpers.infra.fixtures``.

Fixtures
--------
``s3_server`` (session)
    A running :class:`infra.s3.SeaweedS3`: ``.endpoint_url``, ``.access_key``,
    ``.secret_key``, ``.region``, ``.storage_options`` (for fsspec/s3fs), ``.env`` (AWS_* and
    FSSPEC_S3_* variables for subprocesses / Ray jobs), ``.create_bucket(name)``,
    ``.filesystem()`` (fresh s3fs instance), ``.pyarrow_filesystem()``.
``s3_bucket`` (function)
    Name (str) of a fresh, empty bucket on ``s3_server``, unique per test.
``ray_cluster`` (session)
    A running :class:`infra.ray_cluster.RayCluster`: ``.address`` ("127.0.0.1:<gcs>"),
    ``.dashboard_url``, ``.env`` (full environment with RAY_ADDRESS + auth token),
    ``.submit_job(entrypoint, working_dir, runtime_env_json=None, timeout_s=300, env=...)``
    -> ``(returncode, logs)``, ``.run_driver(script)``.  Teardown kills only this cluster's
    processes and errors the session if any survive.
``ray_s3_env`` (session)
    ``{**ray_cluster.env, **s3_server.env}`` -- environment for a driver subprocess that uses
    both.

Both services start lazily (only if a test requests them), on 127.0.0.1 and random free ports.
"""

from __future__ import annotations

import re
import uuid

import pytest

from .ray_cluster import RayCluster
from .s3 import SeaweedS3


@pytest.fixture(scope="session")
def s3_server():
    srv = SeaweedS3.start()
    try:
        yield srv
    finally:
        srv.stop()  # raises (-> a teardown error) if any weed process survives


@pytest.fixture
def s3_bucket(s3_server: SeaweedS3, request) -> str:
    stem = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40] or "t"
    name = f"{stem}-{uuid.uuid4().hex[:8]}".strip("-")
    s3_server.create_bucket(name)
    return name


@pytest.fixture(scope="session")
def ray_cluster():
    cluster = RayCluster.start()
    try:
        yield cluster
    finally:
        # raises LeftoverProcessesError (-> a teardown error) if anything survives
        cluster.stop()


@pytest.fixture(scope="session")
def ray_s3_env(ray_cluster: RayCluster, s3_server: SeaweedS3) -> dict[str, str]:
    return {**ray_cluster.env, **s3_server.env}
