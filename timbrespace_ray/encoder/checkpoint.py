"""Loading the original toolkit's encoder checkpoints, and our own pickle-free encoder format.

Original checkpoints are Lightning `.ckpt` files (the encoder's weights under `state_dict`, keys
prefixed `model.`) or plain state dicts. They are read with `torch.load(weights_only=True)`,
which refuses any global outside torch's own tensor/container set plus `SAFE_GLOBALS` below:
the few non-tensor types a training run's checkpoint plausibly holds in its hyper-parameters
(paths, torch version strings, numpy scalars). A checkpoint holding anything else (arbitrary
classes, functions) is refused with `ModelFormatError` before any of it is constructed.

Our format is a directory: `config.json` (constructor arguments) + `model.pt` (a plain state
dict of tensors, which loads with `weights_only=True` and no extra globals; safetensors is not a
dependency of this package).
"""
from __future__ import annotations

import inspect
import json
import os
import pathlib
import pickle
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch.torch_version import TorchVersion

from ..documents import read_document
from ..errors import ModelFormatError
from .model import ProsodicSequenceEncoder

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.pt"
LIGHTNING_PREFIX = "model."

# Everything else is refused. Entries are (callable, name as pickled) where the name differs
# from the callable's current one: numpy 1.x pickles scalars as numpy.core..., Python 3.13
# pickles paths as pathlib._local..., and Windows paths can only be rebuilt as pure paths here.
SAFE_GLOBALS: list = [
    TorchVersion,
    pathlib.PosixPath,
    (pathlib.PosixPath, "pathlib._local.PosixPath"),
    (pathlib.PureWindowsPath, "pathlib.WindowsPath"),
    (pathlib.PureWindowsPath, "pathlib._local.WindowsPath"),
    np._core.multiarray.scalar,
    (np._core.multiarray.scalar, "numpy.core.multiarray.scalar"),
    np.dtype,
    np.dtypes.Float64DType,
    np.dtypes.Float32DType,
    np.dtypes.Int64DType,
    np.dtypes.Int32DType,
    np.dtypes.BoolDType,
]


def _torch_load(path: str | os.PathLike, safe_globals: list) -> Any:
    try:
        with torch.serialization.safe_globals(safe_globals):
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise ModelFormatError(f"no checkpoint at {path}") from exc
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        raise ModelFormatError(f"refused to load {path}: not a weights-only checkpoint of "
                               f"allowed types ({exc})") from exc


def encoder_state_dict(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The encoder's own state dict from a Lightning checkpoint or a (nested) state dict."""
    state = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state, Mapping):
        raise ModelFormatError("checkpoint 'state_dict' is not a mapping")
    if any(k.startswith(LIGHTNING_PREFIX) for k in state):
        # the Lightning module wraps the encoder as `self.model`; its other keys are not ours
        state = {k[len(LIGHTNING_PREFIX):]: v for k, v in state.items()
                 if k.startswith(LIGHTNING_PREFIX)}
    return dict(state)


def _shape_config(state: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """Constructor arguments that the tensor shapes determine (nhead is not one of them)."""
    try:
        layers = {k.split(".")[2] for k in state if k.startswith("transformer_encoder.layers.")}
        return {"vocab_size": state["prediction_head.3.weight"].shape[0],
                "hidden_dim": state["token_embedding.embedding.weight"].shape[1],
                "num_layers": len(layers),
                "pos_max_len": state["pos_encoder.pe"].shape[1]}
    except (KeyError, IndexError, AttributeError) as exc:
        raise ModelFormatError(f"not a ProsodicSequenceEncoder state dict (missing {exc})") from exc


def _build(config: Mapping[str, Any], state: Mapping[str, torch.Tensor],
           source: str) -> ProsodicSequenceEncoder:
    try:
        model = ProsodicSequenceEncoder(**config)
        model.load_state_dict(state, strict=True)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ModelFormatError(f"{source} does not fit ProsodicSequenceEncoder: {exc}") from exc
    return model


def load_checkpoint(path: str | os.PathLike, **overrides: Any) -> ProsodicSequenceEncoder:
    """Encoder from an original checkpoint (Lightning `.ckpt` or state dict file).

    Architecture comes from the tensor shapes, then from the checkpoint's `hyper_parameters`
    where their names match constructor arguments (e.g. `nhead`), then from `overrides`.
    """
    checkpoint = _torch_load(path, SAFE_GLOBALS)
    if not isinstance(checkpoint, Mapping):
        raise ModelFormatError(f"{path} holds a {type(checkpoint).__name__}, not a checkpoint")
    state = encoder_state_dict(checkpoint)
    hparams = checkpoint.get("hyper_parameters")
    accepted = inspect.signature(ProsodicSequenceEncoder).parameters
    config = {k: v for k, v in (hparams if isinstance(hparams, Mapping) else {}).items()
              if k in accepted}
    config.update(_shape_config(state))
    config.update(overrides)
    return _build(config, state, str(path))


def _config_of(config: Mapping[str, Any]) -> dict[str, Any]:
    # normalised the way the constructor does it; on the meta device nothing is allocated
    with torch.device("meta"):
        return ProsodicSequenceEncoder(**config).config


def save_encoder(directory: str | os.PathLike, model: ProsodicSequenceEncoder,
                 config: Mapping[str, Any] | None = None) -> None:
    """Write `config.json` + `model.pt` into `directory` (created), each replaced atomically.

    `config.json` records `model.config`. The optional `config` (constructor arguments, e.g.
    the training stage's) is only checked: a key that disagrees with the model is an error.
    """
    if config is not None and _config_of({**model.config, **config}) != model.config:
        raise ValueError(f"config {dict(config)} does not describe this model ({model.config})")
    os.makedirs(directory, exist_ok=True)
    weights = os.path.join(directory, WEIGHTS_FILE)
    torch.save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
               weights + ".tmp")
    os.replace(weights + ".tmp", weights)
    cfg = os.path.join(directory, CONFIG_FILE)
    with open(cfg + ".tmp", "w") as fh:
        json.dump(model.config, fh, indent=1)
    os.replace(cfg + ".tmp", cfg)


def load_encoder(directory: str | os.PathLike) -> ProsodicSequenceEncoder:
    """Encoder written by `save_encoder`."""
    cfg = os.path.join(directory, CONFIG_FILE)
    config = read_document(cfg, "JSON", ModelFormatError, f"no {CONFIG_FILE} in {directory}")
    if not isinstance(config, dict):
        raise ModelFormatError(f"{cfg} must hold an object of constructor arguments")
    state = _torch_load(os.path.join(directory, WEIGHTS_FILE), [])
    if not isinstance(state, Mapping):
        raise ModelFormatError(f"{directory}/{WEIGHTS_FILE} is not a state dict")
    return _build(config, state, str(directory))


def load_model(path: str | os.PathLike) -> ProsodicSequenceEncoder:
    """`load_encoder` for a directory, `load_checkpoint` for a file."""
    return load_encoder(path) if os.path.isdir(path) else load_checkpoint(path)
