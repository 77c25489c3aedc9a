"""Real-service test infrastructure: a SeaweedFS S3 server and a private local Ray cluster.

Load the pytest fixtures with ``pytest_plugins = ["helpers.infra.fixtures"]`` (tests/ on sys.path)
or ``pytest -p helpers.infra.fixtures``.  The helpers can also be used directly::

    from helpers.infra import SeaweedS3, RayCluster
"""

from .ray_cluster import (
    DEFAULT_EXCLUDES,
    JobFailedError,
    JobResult,
    JobTimeoutError,
    LeftoverProcessesError,
    RayCluster,
    RayStartupError,
)
from .s3 import S3StartupError, SeaweedS3, find_weed

__all__ = [
    "DEFAULT_EXCLUDES",
    "JobFailedError",
    "JobResult",
    "JobTimeoutError",
    "LeftoverProcessesError",
    "RayCluster",
    "RayStartupError",
    "S3StartupError",
    "SeaweedS3",
    "find_weed",
]
