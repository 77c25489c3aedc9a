"""deploy/kuberay: the RayJob and its image, checked offline with the real tools.

- The RayJob's rayClusterSpec goes through Ray's own KubeRay translator (the code the autoscaler
  sidecar runs on the head to turn the RayCluster into its config) and the result through the
  checks Ray's autoscaler applies to it (prepare_config + validate_config, as its KubeRay config
  reader does); Ray's bin packing then says which pods the stages' resource requests start.
- Every pod template validates as a Kubernetes PodTemplate (kubernetes-validate, strict: an
  unknown field fails).
- The Dockerfile, the manifest, pyproject.toml and the Ray installed here agree on the image
  and the Ray version.
Each kind of check is also shown to reject a deliberately broken copy.
"""
from __future__ import annotations

import copy
import functools
import re
import shlex
import sys
import tomllib
from pathlib import Path

import kubernetes_validate
import pytest
import ray
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from ray.autoscaler._private.kuberay.autoscaling_config import (
    _derive_autoscaling_config_from_ray_cr,
)
from ray.autoscaler._private.kuberay.utils import parse_quantity
from ray.autoscaler._private.node_provider_availability_tracker import NodeAvailabilitySummary
from ray.autoscaler._private.resource_demand_scheduler import (
    _default_utilization_scorer,
    get_nodes_for,
)
from ray.autoscaler._private.util import validate_config
from ray.autoscaler.v2.instance_manager.config import AutoscalingConfig

import timbrespace_ray
from timbrespace_ray.cli import build_parser
from timbrespace_ray.config import load_config
from timbrespace_ray.stages.embed import EmbedStage
from timbrespace_ray.stages.features import FeaturesStage
from timbrespace_ray.stages.tokens import TokensStage
from timbrespace_ray.storage import Location

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy" / "kuberay"
MANIFEST = DEPLOY / "rayjob.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
K8S_VERSION = "1.30"  # the oldest Kubernetes minor the big clouds still run; schemas shipped
HEAD = "headgroup"  # the name Ray's translator gives the head group's node type
GiB = 1 << 30
HEADROOM = 2 * GiB  # container memory beyond Ray `memory` + object store: raylet, page cache


# -- the manifest -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def documents() -> dict[str, dict]:
    docs = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    by_kind = {d["kind"]: d for d in docs}
    assert len(by_kind) == len(docs), "one object of each kind"
    return by_kind


@pytest.fixture(scope="module")
def rayjob(documents) -> dict:
    return documents["RayJob"]


def _cluster_spec(rayjob) -> dict:
    return copy.deepcopy(rayjob["spec"]["rayClusterSpec"])


def _groups(spec: dict) -> dict[str, dict]:
    return {HEAD: spec["headGroupSpec"], **{g["groupName"]: g for g in spec["workerGroupSpecs"]}}


def _templates(rayjob) -> dict[str, dict]:
    spec = rayjob["spec"]
    return {**{name: g["template"] for name, g in _groups(spec["rayClusterSpec"]).items()},
            "submitter": spec["submitterPodTemplate"]}


def _ray_container(group: dict) -> dict:
    return group["template"]["spec"]["containers"][0]  # KubeRay: the first container runs Ray


# -- Ray's translator and autoscaler checks ---------------------------------------------------
def derive(cluster_spec: dict, name: str = "timbrespace-pipeline") -> dict:
    """The autoscaling config Ray's autoscaler builds from the RayCluster that KubeRay creates
    for the RayJob (the RayJob's rayClusterSpec is that RayCluster's spec), checked as Ray's
    KubeRay config reader checks it."""
    ray_cr = {"apiVersion": "ray.io/v1", "kind": "RayCluster",
              "metadata": {"name": name, "namespace": "default"}, "spec": cluster_spec}
    config = _derive_autoscaling_config_from_ray_cr(ray_cr)  # runs validate_config itself
    validate_config(config)
    AutoscalingConfig(copy.deepcopy(config), skip_content_hash=True)  # prepare + validate
    return config


@pytest.fixture(scope="module")
def autoscaling(rayjob) -> dict:
    return derive(_cluster_spec(rayjob))


def assert_head_takes_no_work(config: dict) -> None:
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"]["CPU"] == 0, "tasks and actors would be scheduled on the head"
    assert not head["resources"].get("GPU")


def test_rays_translator_derives_a_workless_head_and_groups_scaling_from_zero(autoscaling):
    assert autoscaling["provider"]["type"] == "kuberay"
    types = autoscaling["available_node_types"]
    assert set(types) == {HEAD, "cpu", "gpu"}
    assert_head_takes_no_work(autoscaling)
    cpu, gpu = types["cpu"], types["gpu"]
    assert cpu["min_workers"] == 0 < cpu["max_workers"]
    assert gpu["min_workers"] == 0 < gpu["max_workers"]
    assert cpu["resources"]["CPU"] == 8 and "GPU" not in cpu["resources"]
    assert cpu["resources"]["memory"] == 14 * GiB
    assert gpu["resources"]["GPU"] == 1 and gpu["resources"]["CPU"] == 8
    assert autoscaling["idle_timeout_minutes"] == 10  # as cluster.yaml
    assert autoscaling["max_workers"] == cpu["max_workers"] + gpu["max_workers"]
    # and as the autoscaler's (v2) config object sees the node types
    node_types = AutoscalingConfig(copy.deepcopy(autoscaling),
                                   skip_content_hash=True).get_node_type_configs()
    assert node_types["cpu"].min_worker_nodes == node_types["gpu"].min_worker_nodes == 0


def test_broken_cluster_specs_are_rejected_by_the_same_checks(rayjob):
    spec = _cluster_spec(rayjob)
    spec["headGroupSpec"]["rayStartParams"]["num-cpus"] = "2"
    with pytest.raises(AssertionError, match="scheduled on the head"):
        assert_head_takes_no_work(derive(spec))

    spec = _cluster_spec(rayjob)  # more pods at minimum than the cluster may ever have
    spec["workerGroupSpecs"][0]["minReplicas"] = 1000
    with pytest.raises(ValueError, match="smaller than the sum of `min_workers`"):
        derive(spec)

    spec = _cluster_spec(rayjob)  # Ray's node resources are whole numbers
    spec["workerGroupSpecs"][0]["rayStartParams"]["num-cpus"] = "7.5"
    with pytest.raises(ValueError):
        derive(spec)

    spec = _cluster_spec(rayjob)  # not a Kubernetes quantity (GB is no suffix)
    del spec["workerGroupSpecs"][0]["rayStartParams"]["memory"]
    _ray_container(spec["workerGroupSpecs"][0])["resources"]["limits"]["memory"] = "24GB"
    with pytest.raises(ValueError, match="24GB"):
        derive(spec)


# -- pods hold what Ray is told they hold -----------------------------------------------------
def test_pods_hold_what_their_ray_start_params_promise(rayjob):
    groups = _groups(_cluster_spec(rayjob))
    for name, group in groups.items():
        params = group["rayStartParams"]
        # KubeRay's rayStartParams is a map of strings: an unquoted 0 is refused by the CRD
        assert all(isinstance(v, str) for v in params.values()), name
        resources = _ray_container(group)["resources"]
        assert resources["requests"] == resources["limits"], f"{name}: Guaranteed QoS"
        limits = resources["limits"]
        if name != HEAD:
            assert parse_quantity(limits["cpu"]) == int(params["num-cpus"]), name
        assert parse_quantity(limits.get("nvidia.com/gpu", "0")) == int(params.get("num-gpus", 0))
        memory, store = int(params["memory"]), int(params["object-store-memory"])
        assert memory + store + HEADROOM <= parse_quantity(limits["memory"]), name
        # the object store lives in /dev/shm: a memory-backed emptyDir at least that large
        spec = group["template"]["spec"]
        mount = next(m for m in _ray_container(group)["volumeMounts"]
                     if m["mountPath"] == "/dev/shm")
        volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
        assert volume["emptyDir"]["medium"] == "Memory"
        assert parse_quantity(volume["emptyDir"]["sizeLimit"]) >= store, name
        if name != HEAD:  # both worker groups start, and may shrink back, to no pods
            assert group["replicas"] == group["minReplicas"] == 0 < group["maxReplicas"], name
    assert groups[HEAD]["rayStartParams"]["num-cpus"] == "0"
    assert groups["gpu"]["template"]["spec"]["tolerations"][0]["key"] == "nvidia.com/gpu"


@pytest.fixture(scope="module")
def pipeline_config(documents, tmp_path_factory):
    """The ConfigMap's config as the job reads it: the entrypoint's arguments through the
    package's own command-line parser, the file through its config validation."""
    path = tmp_path_factory.mktemp("config") / "pipeline.yaml"
    path.write_text(documents["ConfigMap"]["data"]["pipeline.yaml"])
    argv = shlex.split(documents["RayJob"]["spec"]["entrypoint"])
    args = build_parser().parse_args(argv[2:])
    assert args.command == "run" and args.config == "/home/ray/config/pipeline.yaml"
    return load_config(str(path))


def _scheduler(autoscaling):
    scorer = functools.partial(_default_utilization_scorer,
                               node_availability_summary=NodeAvailabilitySummary({}))

    def pods_for(demand: dict, count: int) -> tuple[dict, list]:
        """The pods Ray's autoscaler starts for `count` tasks/actors asking for `demand`, on
        a cluster that has only its head."""
        return get_nodes_for(autoscaling["available_node_types"], {HEAD: 1}, HEAD, 1000,
                             [dict(demand)] * count, scorer)

    return pods_for


def _stage_requests(cfg, tmp_path) -> dict[str, dict]:
    """What each stage asks Ray for per task/actor with this config, as the Ray executor turns
    the stages' Resources into Ray options (named as the autoscaler names resources)."""
    from timbrespace_ray.executors.ray import _ray_options

    out = Location.of(str(tmp_path))
    names = {"num_cpus": "CPU", "num_gpus": "GPU", "memory": "memory"}

    def ray_options(res) -> dict:
        return {names[k]: v for k, v in _ray_options(res).items()}

    features = FeaturesStage(out, cfg.input, cfg.features, cfg.storage.storage_options)
    tokens = TokensStage(out, None, {}, use_gpu=bool(cfg.tokens.use_gpu),
                         num_cpus=cfg.tokens.cpus_per_worker)
    embed = EmbedStage(out, cfg.embed, None, {}, use_gpu=bool(cfg.embed.use_gpu))
    train = {"CPU": cfg.train.resolved(bool(cfg.train.use_gpu)).cpus_per_worker,
             **({"GPU": 1.0} if cfg.train.use_gpu else {})}
    kmeans = {"CPU": cfg.kmeans.cpus_per_fit, **({"GPU": 1.0} if cfg.kmeans.use_gpu else {})}
    return {"features": ray_options(features.resources),
            "profile": {"CPU": cfg.profile.cpus_per_worker},
            "kmeans": kmeans, "tokens": ray_options(tokens.resources),
            "train": train, "embed": ray_options(embed.resources)}


def test_stage_requests_start_the_right_pods_and_fill_them(autoscaling, pipeline_config,
                                                           tmp_path):
    cfg = pipeline_config
    # KubeRay's autoscaler is not visible from the driver: the GPU stages must ask for GPUs
    assert cfg.kmeans.use_gpu and cfg.tokens.use_gpu and cfg.train.use_gpu and cfg.embed.use_gpu
    pods_for = _scheduler(autoscaling)
    types = autoscaling["available_node_types"]
    requests = _stage_requests(cfg, tmp_path)
    assert requests["features"]["memory"] > GiB  # the features stage does reserve memory
    for stage, demand in requests.items():
        group = "gpu" if demand.get("GPU") else "cpu"
        pod = types[group]["resources"]
        # whole multiples: a pod fits exactly floor(CPUs / request) of them, memory included
        per_pod = int(min(pod[k] / v for k, v in demand.items() if v))
        assert per_pod >= 1, stage
        added, left = pods_for(demand, 2 * per_pod)
        assert dict(added) == {group: 2} and not left, (stage, demand, dict(added))
        if group == "cpu":  # CPUs bind, memory never first: whole multiples of the request
            assert pod["CPU"] % demand["CPU"] == 0 and per_pod == pod["CPU"] // demand["CPU"], (
                stage, demand, pod)


def test_a_pod_too_small_for_a_stage_is_caught_by_rays_bin_packing(autoscaling, pipeline_config,
                                                                   tmp_path):
    shrunk = copy.deepcopy(autoscaling)
    shrunk["available_node_types"]["cpu"]["resources"]["memory"] = 4 * GiB
    features = _stage_requests(pipeline_config, tmp_path)["features"]
    added, left = _scheduler(shrunk)(features, 16)
    assert dict(added) == {"cpu": 8} and not left  # memory binds: 2 tasks a pod, not 8


# -- Kubernetes pod specs ---------------------------------------------------------------------
def validate_pod_template(name: str, template: dict) -> None:
    kubernetes_validate.validate(
        {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": name},
         "template": template}, K8S_VERSION, strict=True)


def test_pod_templates_validate_as_kubernetes_pods(rayjob, documents):
    templates = _templates(rayjob)
    assert set(templates) == {HEAD, "cpu", "gpu", "submitter"}
    for name, template in templates.items():
        validate_pod_template(name, template)
        for container in template["spec"]["containers"]:
            for quantities in container.get("resources", {}).values():
                for q in quantities.values():
                    parse_quantity(q)  # raises on anything that is not a K8s quantity
    for kind in ("ServiceAccount", "ConfigMap"):
        kubernetes_validate.validate(documents[kind], K8S_VERSION, strict=True)


def test_broken_pod_templates_are_rejected(rayjob):
    template = copy.deepcopy(_templates(rayjob)["cpu"])
    template["spec"]["containers"][0]["resource"] = {"limits": {"cpu": "8"}}  # typo
    with pytest.raises(kubernetes_validate.ValidationError, match="resource"):
        validate_pod_template("cpu", template)
    template = copy.deepcopy(_templates(rayjob)[HEAD])  # a port number as a string
    template["spec"]["containers"][0]["ports"][0]["containerPort"] = "6379"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_pod_template(HEAD, template)


# -- the job, its config and its credentials --------------------------------------------------
def test_job_runs_the_pipeline_from_the_mounted_config_and_cleans_up(rayjob, documents):
    spec = rayjob["spec"]
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0
    assert spec["rayClusterSpec"]["enableInTreeAutoscaling"] is True
    argv = shlex.split(spec["entrypoint"])
    assert argv[0] == "python" and argv[1].endswith("/jobs/pipeline.py")
    assert (REPO / "jobs" / "pipeline.py").is_file()
    config_path = Path(argv[argv.index("--config") + 1])
    head = spec["rayClusterSpec"]["headGroupSpec"]
    mount = next(m for m in _ray_container(head)["volumeMounts"]
                 if m["mountPath"] == str(config_path.parent))
    volume = next(v for v in head["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    configmap = documents["ConfigMap"]
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    assert {"key": config_path.name, "path": config_path.name} in volume["configMap"]["items"]
    assert config_path.name in configmap["data"]
    # the script is where the Dockerfile puts it
    workdir = _dockerfile()["workdir"]
    assert argv[1] == f"{workdir}/jobs/pipeline.py"
    assert re.search(r"^COPY .*\bjobs \./jobs$", DOCKERFILE.read_text(), re.M)


SECRET_NAMES = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|CREDENTIAL", re.I)


def test_credentials_come_from_a_secret_or_the_service_account_never_the_manifest(
        rayjob, documents, pipeline_config):
    assert "Secret" not in documents
    account = documents["ServiceAccount"]["metadata"]["name"]
    groups = _groups(_cluster_spec(rayjob))
    for name, group in groups.items():
        spec = group["template"]["spec"]
        assert spec["serviceAccountName"] == account, name  # IRSA / Workload Identity
        container = _ray_container(group)
        refs = [e["secretRef"] for e in container.get("envFrom", []) if "secretRef" in e]
        assert refs == [{"name": "timbrespace-s3", "optional": True}], name
    for template in _templates(rayjob).values():
        for container in template["spec"]["containers"]:
            for env in container.get("env", []):
                assert not (SECRET_NAMES.search(env["name"]) and "value" in env), env["name"]
    options = pipeline_config.storage.storage_options
    assert not any(SECRET_NAMES.search(k) for k in options), options
    assert not re.search(r"AKIA[0-9A-Z]{16}", MANIFEST.read_text())  # an AWS access key id


# -- image and Ray version --------------------------------------------------------------------
def _dockerfile() -> dict:
    """ARG defaults, the base image with them substituted (per VARIANT), the last USER and
    WORKDIR, and the RUN text."""
    text = DOCKERFILE.read_text()
    logical = re.sub(r"\\\n", " ", text)  # continuation lines joined
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", logical, re.M))
    base = re.findall(r"^FROM (\S+)", logical, re.M)
    assert len(base) == 1, "one stage"

    def resolve(s: str, **over) -> str:
        return re.sub(r"\$\{(\w+)\}", lambda m: {**args, **over}[m.group(1)], s)

    users = re.findall(r"^USER (\S+)$", logical, re.M)
    workdirs = re.findall(r"^WORKDIR (\S+)$", logical, re.M)
    return {"args": args, "base": {v: resolve(base[0], VARIANT=v) for v in ("cpu", "gpu")},
            "user": users[-1] if users else "root", "workdir": workdirs[-1],
            "run": " ".join(re.findall(r"^RUN (.*)$", logical, re.M))}


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def test_dockerfile_builds_on_rays_image_of_the_tested_ray_version():
    docker = _dockerfile()
    ray_version = docker["args"]["RAY_VERSION"]
    # The image's Ray is the release line installed here (pyproject.toml caps Ray below the
    # next minor release): the translator and autoscaler checks above ran with it, and in the
    # cluster the same code runs from the image (KubeRay's autoscaler sidecar uses the head's
    # image). Moving to another Ray line means bumping the cap, RAY_VERSION, rayVersion and the
    # image tags, which this test then asks for.
    assert Version(ray_version).release[:2] == Version(ray.__version__).release[:2], (
        f"deploy/kuberay pins Ray {ray_version}, tests run Ray {ray.__version__}: set "
        f"RAY_VERSION in {DOCKERFILE.name}, rayVersion and the image tags in {MANIFEST.name}")
    ray_req = next(Requirement(d) for d in _pyproject()["dependencies"]
                   if Requirement(d).name == "ray")
    assert Version(ray_version) in ray_req.specifier, (ray_version, str(ray_req))
    py = f"py{sys.version_info.major}{sys.version_info.minor}"
    for variant, base in docker["base"].items():
        assert base == f"rayproject/ray:{ray_version}-{py}-{variant}", base
    python = Version(f"{sys.version_info.major}.{sys.version_info.minor}")
    assert python in SpecifierSet(_pyproject()["requires-python"])
    # this package on top, Ray held at the base image's version, never as root
    assert '"ray==${RAY_VERSION}"' in docker["run"]
    assert "pip install --no-cache-dir" in docker["run"] and " -e " not in docker["run"]
    assert docker["user"].split(":")[0] not in ("root", "0")


def test_manifest_names_the_dockerfiles_image_and_ray_version(rayjob):
    docker = _dockerfile()
    ray_version = docker["args"]["RAY_VERSION"]
    spec = rayjob["spec"]
    assert spec["rayClusterSpec"]["rayVersion"] == ray_version
    py = f"py{sys.version_info.major}{sys.version_info.minor}"
    package = timbrespace_ray.__version__  # the package's one version (pyproject reads it)
    expect = {HEAD: "cpu", "cpu": "cpu", "gpu": "gpu", "submitter": "cpu"}
    repos = set()
    for name, template in _templates(rayjob).items():
        image = template["spec"]["containers"][0]["image"]
        repo, _, tag = image.rpartition(":")
        repos.add(repo)
        assert repo.endswith("/timbrespace-ray"), image
        assert tag == f"{package}-ray{ray_version}-{py}-{expect[name]}", image
    assert len(repos) == 1


def test_broken_versions_are_caught():
    ray_req = next(Requirement(d) for d in _pyproject()["dependencies"]
                   if Requirement(d).name == "ray")
    assert Version("2.0.0") not in ray_req.specifier  # the specifier check bites


# -- build context ----------------------------------------------------------------------------
def _dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path or one of its parent
    folders decides; `!` re-includes; `*` stays within one path element, `**` spans any."""
    def regex(p: str) -> re.Pattern:
        out, i = "", 0
        while i < len(p):
            if p.startswith("**/", i):
                out, i = out + "(?:.*/)?", i + 3
            elif p.startswith("**", i):
                out, i = out + ".*", i + 2
            elif p[i] == "*":
                out, i = out + "[^/]*", i + 1
            elif p[i] == "?":
                out, i = out + "[^/]", i + 1
            elif p[i] == "[":
                j = p.index("]", i)
                out, i = out + p[i:j + 1], j + 1
            else:
                out, i = out + re.escape(p[i]), i + 1
        return re.compile(out + r"\Z")

    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    excluded = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = regex(raw[1:] if negate else raw)
        if any(pattern.match(p) for p in prefixes):
            excluded = not negate
    return excluded


def test_build_context_holds_only_what_the_image_installs():
    patterns = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]
    copied = re.findall(r"^COPY \S+ (.+) \S+$", DOCKERFILE.read_text(), re.M)
    for sources in copied:
        for source in sources.split():
            assert (REPO / source).exists(), source
            assert not _dockerignore_excludes(patterns, source), source
    for dropped in (".venv/bin/python", ".git/HEAD", "tests/conftest.py", "demo_output/x",
                    "docs/x.md", "deploy/kuberay/Dockerfile",
                    "timbrespace_ray/__pycache__/cli.cpython-311.pyc"):
        assert _dockerignore_excludes(patterns, dropped), dropped
    sent = [p for p in REPO.rglob("*") if p.is_file()
            and not p.relative_to(REPO).parts[0] in (".git", ".venv")
            and not _dockerignore_excludes(patterns, p.relative_to(REPO).as_posix())]
    assert sum(p.stat().st_size for p in sent) < 32 << 20, "build context over 32 MiB"
    assert _dockerignore_excludes(["*", "!jobs"], "tests/x.py")  # the matcher bites
    assert not _dockerignore_excludes(["*", "!jobs"], "jobs/pipeline.py")
