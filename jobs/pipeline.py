"""Ray job entrypoint: `ray job submit --working-dir . -- python jobs/pipeline.py <stage> ...`.

Takes exactly the arguments of the `timbrespace-ray` command (features, kmeans, tokens, train,
embed, run). Inside a Ray job RAY_ADDRESS is set, so the stage joins that cluster.
"""
import os
import sys

# the job's working dir holds the package source when it is not installed on the cluster
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from timbrespace_ray.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
