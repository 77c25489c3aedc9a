"""Loading original (Lightning / state-dict) checkpoints safely, and our own encoder format."""
from __future__ import annotations

import json
import pathlib
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch.torch_version import TorchVersion

from timbrespace_ray.encoder import (ProsodicSequenceEncoder, load_checkpoint, load_encoder,
                                     load_model, make_optimizer, save_encoder)
from timbrespace_ray.errors import ModelFormatError

ARCH = dict(vocab_size=122, hidden_dim=32, num_layers=2, nhead=2, pos_max_len=100)
CALLED: list[str] = []


def _side_effect() -> None:
    CALLED.append("unpickled")


class Payload:
    """What an untrusted checkpoint could smuggle in: unpickling it runs `_side_effect`."""

    def __reduce__(self):
        return (_side_effect, ())


@pytest.fixture()
def model() -> ProsodicSequenceEncoder:
    torch.manual_seed(0)
    return ProsodicSequenceEncoder(**ARCH).eval()


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def lightning_checkpoint(model: ProsodicSequenceEncoder) -> dict:
    """A checkpoint shaped like Lightning's for a module holding the encoder as `self.model`."""
    optimizer, scheduler = make_optimizer(model, 1e-4, 0.01, 10, 100)
    model(torch.randint(0, 120, (2, 20)), training=True)[0].sum().backward()
    optimizer.step()
    scheduler.step()
    state = OrderedDict((f"model.{k}", v) for k, v in model.state_dict().items())
    return {
        "epoch": 3,
        "global_step": 1234,
        "pytorch-lightning_version": "2.1.0",
        "state_dict": state,
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 4}}}},
        "callbacks": {"ModelCheckpoint{'monitor': 'val_loss'}": {
            "best_model_score": torch.tensor(1.5), "best_model_path": "/ckpt/best.ckpt"}},
        "optimizer_states": [optimizer.state_dict()],
        "lr_schedulers": [scheduler.state_dict()],
        "hparams_name": "kwargs",
        "hyper_parameters": {
            "vocab_size": 122, "hidden_dim": 32, "num_layers": 2, "nhead": np.int64(2),
            "pos_max_len": 100, "padding_token_id": -100, "dropout_rate": 0.2,
            "learning_rate": np.float64(1e-4), "batch_size": np.int64(64),
            "use_amp": np.bool_(True), "warmup_ratio": np.float32(0.1),
            "data_dir": pathlib.PosixPath("/data/tokens"),
            "torch_version": TorchVersion("2.1.0"),
        },
    }


def test_lightning_checkpoint_loads(model, tmp_path):
    path = tmp_path / "epoch=3.ckpt"
    torch.save(lightning_checkpoint(model), path)
    loaded = load_checkpoint(path)
    assert_same_weights(loaded, model)
    # nhead and dropout cannot be read from the tensors: they come from hyper_parameters
    assert loaded.nhead == 2 and loaded.dropout_rate == 0.2
    x = torch.randint(0, 120, (2, 30))
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), model(x))
    # the allow-list applies to this load only
    # converts to our format (numpy hyper-parameters included)
    save_encoder(tmp_path / "converted", loaded)
    assert_same_weights(load_encoder(tmp_path / "converted"), model)
    leaked = [g for g in torch.serialization.get_safe_globals()
              if g in (TorchVersion, pathlib.PosixPath, np.dtype)]
    assert leaked == []


def test_plain_state_dict_loads_with_overrides(model, tmp_path):
    path = tmp_path / "encoder.pt"
    torch.save(model.state_dict(), path)
    loaded = load_checkpoint(path, nhead=2)
    assert_same_weights(loaded, model)
    assert loaded.config["hidden_dim"] == 32 and loaded.config["pos_max_len"] == 100


def test_nested_state_dict_without_prefix_loads(model, tmp_path):
    path = tmp_path / "encoder.pt"
    torch.save({"state_dict": model.state_dict()}, path)
    assert_same_weights(load_checkpoint(path, nhead=2), model)


def test_arbitrary_objects_are_refused_without_running_them(model, tmp_path):
    ckpt = lightning_checkpoint(model)
    ckpt["hyper_parameters"]["callback"] = Payload()
    path = tmp_path / "evil.ckpt"
    torch.save(ckpt, path)
    CALLED.clear()
    with pytest.raises(ModelFormatError, match="refused"):
        load_checkpoint(path)
    assert CALLED == []
    with pytest.raises(ModelFormatError, match="refused"):
        load_model(path)
    assert CALLED == []


def test_numpy_arrays_are_not_allow_listed(model, tmp_path):
    ckpt = lightning_checkpoint(model)
    ckpt["hyper_parameters"]["weights"] = np.arange(3.0)
    path = tmp_path / "arrays.ckpt"
    torch.save(ckpt, path)
    with pytest.raises(ModelFormatError, match="refused"):
        load_checkpoint(path)


def test_wrong_shapes_and_missing_keys_are_reported(model, tmp_path):
    state = model.state_dict()
    bad = dict(state)
    bad["final_norm.weight"] = torch.ones(5)
    torch.save(bad, tmp_path / "shape.pt")
    with pytest.raises(ModelFormatError, match="does not fit"):
        load_checkpoint(tmp_path / "shape.pt", nhead=2)
    missing = {k: v for k, v in state.items() if not k.startswith("final_norm")}
    torch.save(missing, tmp_path / "missing.pt")
    with pytest.raises(ModelFormatError, match="final_norm"):
        load_checkpoint(tmp_path / "missing.pt", nhead=2)
    torch.save({"something": torch.ones(2)}, tmp_path / "other.pt")
    with pytest.raises(ModelFormatError, match="not a ProsodicSequenceEncoder"):
        load_checkpoint(tmp_path / "other.pt")


def test_missing_and_garbage_files(tmp_path):
    with pytest.raises(ModelFormatError, match="no checkpoint"):
        load_checkpoint(tmp_path / "absent.ckpt")
    (tmp_path / "garbage.ckpt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ModelFormatError):
        load_checkpoint(tmp_path / "garbage.ckpt")


def test_own_format_round_trip(model, tmp_path):
    model.update_mask_prob(0.2)
    save_encoder(tmp_path / "enc", model, dict(ARCH))
    assert sorted(p.name for p in (tmp_path / "enc").iterdir()) == ["config.json", "model.pt"]
    config = json.loads((tmp_path / "enc" / "config.json").read_text())
    assert config["hidden_dim"] == 32 and config["nhead"] == 2 and config["mask_prob"] == 0.2
    assert config["mask_span_dist"] == {"10": 0.5, "5": 0.25, "3": 0.15, "1": 0.1}
    # the weights file is a plain state dict: loadable with no allow-listed globals at all
    raw = torch.load(tmp_path / "enc" / "model.pt", weights_only=True)
    assert set(raw) == set(model.state_dict())
    for loaded in (load_encoder(tmp_path / "enc"), load_model(tmp_path / "enc")):
        assert_same_weights(loaded, model)
        assert loaded.mask_prob == 0.2 and loaded.nhead == 2


def test_save_rejects_a_config_that_does_not_describe_the_model(model, tmp_path):
    with pytest.raises(ValueError, match="does not describe"):
        save_encoder(tmp_path / "enc", model, {**ARCH, "nhead": 4})
    assert not (tmp_path / "enc").exists()


def test_load_encoder_reports_bad_directories(model, tmp_path):
    with pytest.raises(ModelFormatError, match="no config.json"):
        load_encoder(tmp_path)
    save_encoder(tmp_path, model)
    (tmp_path / "config.json").write_text(json.dumps({**ARCH, "colour": "red"}))
    with pytest.raises(ModelFormatError, match="colour"):
        load_encoder(tmp_path)
