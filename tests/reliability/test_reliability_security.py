"""Fault injection, security: credentials never reach logs, error rows, Parquet metadata or run
summaries (fake recognisable keys, a real S3 server, a real Ray cluster); wrong keys fail with a
clear line that does not print them; no model or data file is ever loaded with pickle.

Archive members never written to disk by name: tests/reliability/test_reliability_inputs.py
(test_archive_members_never_reach_the_disk)."""
from __future__ import annotations

import ast
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from helpers.corpus import SHORT, mixed_corpus
from timbrespace_ray.config import load_config
from timbrespace_ray.executors import LocalExecutor
from timbrespace_ray.stages.features import FeaturesStage
from timbrespace_ray.storage import Location, redact, redact_uri
from timbrespace_ray.tables import provenance
from helpers.logs import lines_said

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "timbrespace_ray"

FAKE_KEY_ID = "FAKEKEYID-7f3a9c0d2e"
FAKE_SECRET = "FAKESECRET-abc123-do-not-print-0f9e8d"
FAKE_TOKEN = "FAKETOKEN-55aa77bb99cc"


# --- no pickle --------------------------------------------------------------------------------

# calls that unpickle whatever a file holds, whatever their arguments
_UNSAFE = {"pickle.load", "pickle.loads", "pickle.Unpickler", "cPickle.load", "cPickle.loads",
           "_pickle.load", "_pickle.loads", "cloudpickle.load", "cloudpickle.loads", "dill.load",
           "dill.loads", "joblib.load", "pd.read_pickle", "pandas.read_pickle", "shelve.open",
           "marshal.load", "marshal.loads", "yaml.unsafe_load", "yaml.full_load",
           "torch.jit.load", "np.lib.format.read_array"}
_UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "cloudpickle", "dill", "joblib", "shelve", "marshal"}


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def _kw(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return None


def pickle_loads_in(source: str, filename: str = "<src>") -> list[str]:
    """Every place in `source` where a file could be unpickled."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in _UNSAFE_MODULES:
            if any(a.name in ("load", "loads", "Unpickler", "open") for a in node.names):
                found.append(f"{where}: from {node.module} import ...load")
        if isinstance(node, ast.ImportFrom) and node.module == "torch" and any(a.name == "load" for a in node.names):
            found.append(f"{where}: from torch import load (weights_only cannot be checked)")
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        if name in _UNSAFE:
            found.append(f"{where}: {name}()")
        elif name == "torch.load":
            wo = _kw(node, "weights_only")
            if not (isinstance(wo, ast.Constant) and wo.value is True):
                found.append(f"{where}: torch.load() without weights_only=True")
        elif name in ("np.load", "numpy.load"):
            ap = _kw(node, "allow_pickle")
            if ap is not None and not (isinstance(ap, ast.Constant) and ap.value is False):
                found.append(f"{where}: {name}(allow_pickle=...)")
        elif name == "yaml.load":
            loader = _kw(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
            if not (loader is not None and _dotted(loader).endswith("SafeLoader")):
                found.append(f"{where}: yaml.load() without SafeLoader")
    return found


def test_the_pickle_checker_catches_unsafe_loads():
    bad = """
import pickle, joblib, torch, numpy as np
from dill import loads
a = pickle.load(open("m.pkl", "rb"))
b = joblib.load("m.joblib")
c = torch.load("m.pt")
d = torch.load("m.pt", weights_only=False)
e = np.load("x.npy", allow_pickle=True)
"""
    found = pickle_loads_in(bad)
    assert len(found) == 6, found
    good = """
import torch, numpy as np
c = torch.load("m.pt", map_location="cpu", weights_only=True)
e = np.load("x.npz")
f = np.load("x.npz", allow_pickle=False)
"""
    assert pickle_loads_in(good) == []


def test_no_file_is_loaded_with_pickle_in_the_package():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20
    found = [f for p in files for f in pickle_loads_in(p.read_text(), str(p.relative_to(REPO)))]
    assert found == []
    # the scan does see the model loaders it vouches for
    torch_loads = sum(p.read_text().count("torch.load(") for p in files)
    assert torch_loads >= 2


# --- credentials ---------------------------------------------------------------------------------

def test_redaction_helpers():
    opts = {"key": FAKE_KEY_ID, "secret": FAKE_SECRET, "endpoint_url": "http://127.0.0.1:1",
            "client_kwargs": {"region_name": "r", "aws_session_token": FAKE_TOKEN},
            "list": [{"password": FAKE_SECRET}]}
    text = json.dumps(redact(opts))
    assert FAKE_SECRET not in text and FAKE_KEY_ID not in text and FAKE_TOKEN not in text
    assert "http://127.0.0.1:1" in text
    assert FAKE_SECRET not in redact_uri(f"s3://{FAKE_KEY_ID}:{FAKE_SECRET}@bucket/x")
    assert redact_uri("s3://bucket/x") == "s3://bucket/x"


def _secret_free(texts: dict[str, str | bytes], secrets: list[str]) -> None:
    for where, text in texts.items():
        for s in secrets:
            needle = s.encode() if isinstance(text, bytes) else s
            assert needle not in text, f"a credential appears in {where}"


def _local_output_texts(out: Path) -> dict[str, str | bytes]:
    texts: dict[str, str | bytes] = {}
    for p in out.rglob("*"):
        if p.is_file():
            texts[str(p)] = p.read_bytes()
            if p.suffix == ".parquet":
                t = pq.read_table(p)
                texts[f"{p} (metadata)"] = str(t.schema.metadata)
                texts[f"{p} (rows)"] = json.dumps(t.to_pylist(), default=str)
    return texts


def test_storage_options_never_reach_outputs_or_logs(tmp_path, caplog, capsys):
    """In-process, local files: fake credentials in storage_options and in the input URI's
    settings go nowhere a person or a table could see them."""
    counts = mixed_corpus(tmp_path / "corpus")
    opts = {"key": FAKE_KEY_ID, "secret": FAKE_SECRET, "token": FAKE_TOKEN}
    cfg = load_config(**{"features.files_per_unit": 2})
    out = tmp_path / "out"
    caplog.set_level(logging.DEBUG)
    stage = FeaturesStage(Location.of(str(out), opts), str(tmp_path / "corpus"), cfg.features, opts)
    with lines_said() as lines:
        summary = stage.run(LocalExecutor())
    assert summary.inputs == counts["inputs"] and sum(summary.errors.values()) == counts["errors"]
    captured = capsys.readouterr()
    texts = {"said": "\n".join(lines), "logging": caplog.text, "stdout": captured.out,
             "stderr": captured.err, **_local_output_texts(out)}
    assert any(k.endswith("(rows)") and "errors" in k for k in texts)  # error rows were checked
    _secret_free(texts, [FAKE_KEY_ID, FAKE_SECRET, FAKE_TOKEN])
    # a URI with credentials in it is redacted in the settings written to every file
    s3_stage = FeaturesStage(Location.of(str(out)), f"s3://{FAKE_KEY_ID}:{FAKE_SECRET}@bucket/corpus",
                             cfg.features, opts)
    meta = provenance("features", s3_stage.settings())
    _secret_free({"provenance": b"".join(meta.values())}, [FAKE_SECRET, FAKE_TOKEN])


def _config(path: Path, options: dict) -> Path:
    path.write_text(yaml.safe_dump({"storage": {"storage_options": options},
                                    "features": {"files_per_unit": 2}}))
    return path


def _clean_env(base: dict) -> dict:
    env = {k: v for k, v in base.items() if not k.startswith(("AWS_", "FSSPEC_S3_"))}
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    return env


@pytest.fixture()
def own_ray_cluster():
    # a cluster of its own: Ray's logs must show what this run wrote, not what other tests' jobs
    # handed Ray (a job's runtime_env env_vars are logged by Ray itself)
    from helpers.infra import RayCluster

    cluster = RayCluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.mark.slow
def test_credentials_never_reach_logs_tables_or_summaries(s3_server, s3_bucket, own_ray_cluster,
                                                          tmp_path):
    """The real keys in a config file, fake ones in the environment; a run on a Ray cluster
    reading and writing S3. Neither set appears in the output, the tables or Ray's logs."""
    ray_cluster = own_ray_cluster
    counts = mixed_corpus(tmp_path / "corpus")
    fs = s3_server.filesystem()
    fs.put(str(tmp_path / "corpus") + "/", f"{s3_bucket}/corpus/", recursive=True)
    config = _config(tmp_path / "c.yaml", s3_server.storage_options)
    env = _clean_env(ray_cluster.env)
    env.update({"AWS_ACCESS_KEY_ID": FAKE_KEY_ID, "AWS_SECRET_ACCESS_KEY": FAKE_SECRET,
                "AWS_SESSION_TOKEN": FAKE_TOKEN})
    proc = subprocess.run(
        [sys.executable, "-m", "timbrespace_ray.cli", "features", "--input", f"s3://{s3_bucket}/corpus",
         "--output", f"s3://{s3_bucket}/out", "--config", str(config),
         "--address", ray_cluster.address, "--no-progress"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    logs = proc.stdout + proc.stderr
    assert proc.returncode == 0, logs[-3000:]
    assert f"inputs seen {counts['inputs']} = rows {counts['rows']} + errors {counts['errors']}" in logs
    texts: dict[str, str | bytes] = {"cli output": logs}
    n_parquet = 0
    for path in fs.find(f"{s3_bucket}/out"):
        data = fs.cat_file(path)
        texts[path] = data
        if path.endswith(".parquet"):
            import io

            t = pq.read_table(io.BytesIO(data))
            texts[f"{path} (metadata)"] = str(t.schema.metadata)
            texts[f"{path} (rows)"] = json.dumps(t.to_pylist(), default=str)
            n_parquet += 1
    assert n_parquet >= 3 and any("/_run/history/" in p for p in texts) and any("/errors/" in p for p in texts)
    for p in ray_cluster.temp_dir.glob("session_*/logs/**/*"):
        if p.is_file() and p.stat().st_size < 50 << 20:
            texts[str(p)] = p.read_bytes()
    assert sum("/logs/" in k for k in texts) > 5, "Ray's logs should have been searched too"
    _secret_free(texts, [s3_server.secret_key, s3_server.access_key, FAKE_SECRET, FAKE_KEY_ID,
                         FAKE_TOKEN])


@pytest.mark.slow
@pytest.mark.parametrize("where", ["config-output", "config-input", "environment"])
def test_wrong_keys_fail_clearly_without_printing_them(s3_server, s3_bucket, tmp_path, where):
    fs = s3_server.filesystem()
    fs.pipe_file(f"{s3_bucket}/corpus/a.wav", SHORT[0].read_bytes())
    wrong = {"key": FAKE_KEY_ID, "secret": FAKE_SECRET, "endpoint_url": s3_server.endpoint_url}
    env = _clean_env(os.environ)
    args = ["--input", f"s3://{s3_bucket}/corpus", "--output", f"s3://{s3_bucket}/out", "--no-progress"]
    if where == "config-input":
        args[3] = str(tmp_path / "out")
    if where == "environment":
        env.update({"AWS_ACCESS_KEY_ID": FAKE_KEY_ID, "AWS_SECRET_ACCESS_KEY": FAKE_SECRET,
                    "FSSPEC_S3_ENDPOINT_URL": s3_server.endpoint_url})
    else:
        args += ["--config", str(_config(tmp_path / "wrong.yaml", wrong))]
    proc = subprocess.run([sys.executable, "-m", "timbrespace_ray.cli", "features", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 2, text[-3000:]
    assert "Traceback" not in text
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("timbrespace-ray: error: could not"), text
    denied = f"s3://{s3_bucket}/corpus" if where == "config-input" else f"s3://{s3_bucket}/out"
    assert denied in lines[0] and "access denied" in lines[0] and "credentials" in lines[0], lines[0]
    _secret_free({"cli output": text}, [FAKE_SECRET, FAKE_KEY_ID, s3_server.secret_key])
    assert not fs.find(f"{s3_bucket}/out"), "nothing may be written with refused keys"
