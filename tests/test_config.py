"""The YAML config: defaults for every key, unknown keys and bad values named before anything runs."""
import subprocess
import sys
from pathlib import Path

import pytest

from timbrespace_ray.config import ORIGINAL_RECIPE, PipelineConfig, load_config
from timbrespace_ray.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def test_every_key_has_a_default():
    cfg = load_config()
    assert cfg == PipelineConfig()
    assert cfg.features.hop_ms == 16 and cfg.kmeans.n_clusters == 120 and cfg.train.resolved(use_gpu=True).hidden_dim == 128


@pytest.mark.parametrize("yaml_text,key", [
    ("features:\n  hop_sm: 10\n", "features.hop_sm: unknown key"),
    ("kmeans:\n  n_clusters: 1\n", "kmeans.n_clusters"),
    ("train:\n  lr: -1\n", "train.lr"),
    ("features:\n  smoothing_level: extreme\n", "features.smoothing_level"),
    ("features:\n  sample_rate: 8000\n", "features.sample_rate"),
    ("embed:\n  batch_tokens: many\n", "embed.batch_tokens"),
    ("trian:\n  lr: 0.1\n", "trian: unknown key"),
    ("embed:\n  batch_size: 32\n", "embed.batch_size: no longer a setting; use embed.batch_tokens"),
    ("storage:\n  storage_options: 3\n", "storage.storage_options"),
])
def test_bad_configs_name_the_key(tmp_path, yaml_text, key):
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    assert key in str(err.value) and str(path) in str(err.value)


def test_not_yaml_and_missing_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("features: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(bad))
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "missing.yaml"))
    top = tmp_path / "list.yaml"
    top.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(str(top))


def test_command_line_overrides_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("output: /from/file\nkmeans:\n  n_clusters: 64\n")
    cfg = load_config(str(path), output="/from/cli", **{"kmeans.n_clusters": None})
    assert cfg.output == "/from/cli" and cfg.kmeans.n_clusters == 64


@pytest.mark.parametrize("config", sorted(str(p) for p in (REPO / "jobs" / "configs").glob("*.yaml"))
                         + [str(REPO / "timbrespace_ray" / "demo.yaml")])
def test_shipped_configs_are_valid(config):
    load_config(config)


def test_cli_rejects_a_bad_config_before_running(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("features:\n  files_per_unit: 0\n")
    proc = subprocess.run([sys.executable, "-m", "timbrespace_ray.cli", "run", "--config", str(path),
                           "--input", str(tmp_path), "--output", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "features.files_per_unit" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_unset_recipe_keys_follow_the_cluster():
    cfg = load_config().train
    gpu, cpu = cfg.resolved(use_gpu=True), cfg.resolved(use_gpu=False)
    # one recipe, the measured one, on GPUs as on CPUs; only the worker's CPUs differ
    assert (cpu.hidden_dim, cpu.num_layers, cpu.contrastive_weight, cpu.init) == (128, 2, 1.0, "pretrained")
    assert (cpu.max_steps, cpu.epochs, cpu.step_cap) == (None, None, 1500)  # epochs, capped
    assert gpu.model_copy(update={"cpus_per_worker": cpu.cpus_per_worker}) == cpu
    # the original's recipe is there to set
    original = load_config(**{f"train.{k}": v for k, v in ORIGINAL_RECIPE.items()}).train.resolved(use_gpu=True)
    assert (original.hidden_dim, original.num_layers, original.contrastive_weight) == (768, 8, 0.0)
    # what the user sets wins
    mine = load_config(**{"train.hidden_dim": 64, "train.epochs": 3}).train.resolved(use_gpu=False)
    assert (mine.hidden_dim, mine.epochs, mine.max_steps, mine.num_layers) == (64, 3.0, None, 2)


def test_the_step_budget_follows_the_corpus_size():
    # batches of 16 on 1 worker: 160 training sequences are 10 steps an epoch, 161 are 11
    cpu = load_config(**{"train.max_epochs": 20}).train.resolved(use_gpu=False)
    assert cpu.steps_per_epoch(160) == 10 and cpu.steps_per_epoch(161) == 11
    assert cpu.planned_steps(160) == 200  # 20 epochs of a small corpus
    assert cpu.planned_steps(1) == 20  # a single batch an epoch
    assert cpu.planned_steps(100_000) == 1500  # a large one: the step cap
    two = load_config(**{"train.num_workers": 2, "train.max_epochs": 2.5,
                         "train.step_cap": 40}).train.resolved(use_gpu=False)
    assert two.planned_steps(320) == 25  # 2.5 epochs of 320 / (16 x 2) steps
    assert two.planned_steps(3200) == 40
    # the original's: one epoch, however long
    original = load_config(**{"train.max_epochs": 1.0}).train.resolved(use_gpu=True)
    assert original.model_copy(update={"step_cap": None}).planned_steps(160_000) == 10_000
    # explicit budgets: max_steps over epochs over max_epochs
    epochs = load_config(**{"train.epochs": 3}).train.resolved(use_gpu=False)
    assert epochs.planned_steps(100_000) == 3 * 6250  # not capped
    both = load_config(**{"train.epochs": 3, "train.max_steps": 7}).train.resolved(use_gpu=False)
    assert both.planned_steps(160) == 7


def test_training_workers_take_the_cpus_of_a_node_unless_set():
    cfg = load_config().train
    assert cfg.resolved(use_gpu=True, node_cpus=16).cpus_per_worker == 1.0  # beside a GPU
    assert cfg.resolved(use_gpu=False, node_cpus=2).cpus_per_worker == 2.0
    assert cfg.resolved(use_gpu=False, node_cpus=64).cpus_per_worker == 8.0  # at most 8
    assert cfg.resolved(use_gpu=False, node_cpus=0).cpus_per_worker == 1.0  # a CPU-less head
    four = load_config(**{"train.num_workers": 4}).train
    assert four.resolved(use_gpu=False, node_cpus=8).cpus_per_worker == 2.0
    mine = load_config(**{"train.cpus_per_worker": 3}).train
    assert mine.resolved(use_gpu=False, node_cpus=16).cpus_per_worker == 3.0
