"""The train stage's checkpoint: a save killed half-way leaves the previous one whole."""
import torch

from timbrespace_ray.encoder import ProsodicSequenceEncoder, make_optimizer
from timbrespace_ray.stages.train import EncoderCheckpoint
from timbrespace_ray.storage import Location

SMALL = dict(vocab_size=12, hidden_dim=16, num_layers=1, nhead=2, pos_max_len=32)


def _training(seed):
    torch.manual_seed(seed)
    model = ProsodicSequenceEncoder(**SMALL)
    optimizer, scheduler = make_optimizer(model, 1e-3, 0.01, 1, 10)
    return model, optimizer, scheduler


def _same_weights(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_a_killed_save_leaves_the_previous_checkpoint(tmp_path):
    ckpt = EncoderCheckpoint(Location.of(str(tmp_path / "encoder")))
    first = _training(0)
    ckpt.save(*first, {"step": 20, "epoch": 1})
    # a later save killed after writing part of its folder, before state.json
    second = _training(1)
    partial = ckpt.folder.child("step-00000040-deadbeef")
    partial.child("model.pt").write_atomic(b"half a tensor")

    model, training, state = ckpt.load()
    assert state == {"step": 20, "epoch": 1}
    assert _same_weights(model, first[0]) and not _same_weights(model, second[0])
    assert set(training) == {"optimizer", "scheduler"}

    # the next complete save is the one loaded, and nothing older is left behind
    ckpt.save(*second, {"step": 40, "epoch": 2})
    model, _, state = ckpt.load()
    assert state["step"] == 40 and _same_weights(model, second[0])
    folders = [n for n in ckpt.folder.list_names() if n.startswith("step-")]
    assert len(folders) == 1 and folders[0].startswith("step-00000040-")
    assert "step-00000040-deadbeef" not in folders
