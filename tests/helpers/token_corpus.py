"""A tokens/ output built by construction, for training tests: the train stage reads it as it
reads the tokens stage's (Parquet parts with their settings, the stage's summary)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from timbrespace_ray.encoder.split import is_validation
from timbrespace_ray.storage import Location
from timbrespace_ray.tables import provenance, write_table

N_CLUSTERS = 8
HELD_OUT = 0.5  # train.validation_fraction, by train.validation_key "group"
# A tiny encoder on `unseen_tokens_corpus`: validations every 5 steps, the first the best (the
# loss rises from there), patience 2: the run stops at step 15 with step 5's weights
EARLY_STOPPING = {
    "train.hidden_dim": 32, "train.num_layers": 1, "train.nhead": 2, "train.max_len": 64,
    "train.pos_max_len": 128, "train.batch_size": 4, "train.pool_batches": 2, "train.lr": 1e-2,
    "train.warmup_steps": 2, "train.cpus_per_worker": 1.0, "train.contrastive_weight": 0.0,
    "train.validation_fraction": HELD_OUT, "train.validation_key": "group",
    "train.max_epochs": 30, "train.step_cap": 1000, "train.validation_every": 5,
    "train.early_stopping_patience": 2, "train.log_every": 10, "train.checkpoint_every": 10}


def unseen_tokens_corpus(out: str, n: int = 6, length: int = 120) -> Location:
    """`n` training utterances of tokens 0-3 and `n` held-out ones of tokens 4-7 (uniform at
    random), the split made by the hash of their `group` column: whatever the model learns of
    the training tokens makes it predict the held-out ones worse, so the validation loss rises
    from the first steps."""
    groups = [f"group-{i}" for i in range(100)]
    held = [g for g in groups if is_validation(g, HELD_OUT)][:n]
    kept = [g for g in groups if not is_validation(g, HELD_OUT)][:n]
    rng = np.random.default_rng(0)
    half = N_CLUSTERS // 2
    rows = ([(f"train-{i}", g, rng.integers(0, half, length)) for i, g in enumerate(kept)]
            + [(f"held-{i}", g, rng.integers(half, N_CLUSTERS, length)) for i, g in enumerate(held)])
    table = pa.table({"utt_id": [r[0] for r in rows], "group": [r[1] for r in rows],
                      "tokens": pa.array([r[2].astype(np.int16) for r in rows],
                                         pa.list_(pa.int16()))})
    output = Location.of(out)
    write_table(output.child("tokens", "part-000000.parquet"), table,
                provenance("tokens", {"n_clusters": N_CLUSTERS}))
    output.child("_run", "tokens", "summary.json").write_json({"stage": "tokens"})
    return output


def held_out_sequences(output: Location) -> list[np.ndarray]:
    """The held-out utterances' tokens, in utt_id order (as the train stage scores them)."""
    import pyarrow.parquet as pq

    table = pq.read_table(output.child("tokens", "part-000000.parquet").path)
    rows = sorted((u, np.asarray(t)) for u, g, t in zip(*(table.column(c).to_pylist() for c in
                  ("utt_id", "group", "tokens"))) if is_validation(g, HELD_OUT))
    return [t for _, t in rows]
