"""cluster.yaml: valid for Ray's cluster launcher, autoscaling CPU and GPU workers, nothing
unauthenticated open to the internet."""
import json
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cluster():
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def test_validates_against_rays_schema(cluster):
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(cluster, schema)


def test_worker_types_autoscale_from_zero(cluster):
    types = cluster["available_node_types"]
    cpu, gpu = types["cpu_spot"], types["gpu"]
    assert cpu["min_workers"] == 0 < cpu["max_workers"]
    assert cpu["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
    assert gpu["min_workers"] == 0 < gpu["max_workers"]
    assert cluster["idle_timeout_minutes"] > 0
    assert types[cluster["head_node_type"]]["resources"] == {"CPU": 0}


def test_setup_installs_this_package(cluster):
    setup = " ".join(cluster["setup_commands"])
    assert "pip install" in setup and "timbrespace_ray" in setup and "[gpu]" in setup
    assert "/home/ubuntu/timbrespace_ray" in cluster["file_mounts"]


def test_nothing_but_ssh_is_open_and_the_dashboard_stays_on_loopback(cluster):
    rules = cluster["provider"]["security_group"]["IpPermissions"]
    for rule in rules:
        assert (rule["FromPort"], rule["ToPort"]) == (22, 22)
        for ip_range in rule.get("IpRanges", []):
            assert ip_range["CidrIp"] != "0.0.0.0/0"
        assert not rule.get("Ipv6Ranges")
    head = " ".join(cluster["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in head
