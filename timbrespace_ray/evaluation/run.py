"""`timbrespace-ray evaluate`: does the encoder's embedding tell a label apart, and does it
beat simple baselines? Writes `OUTPUT/evaluation/<label>/` for each label, and with several
labels `OUTPUT/evaluation/summary.md`.

Labels are the tables' carried columns (speaker, language, gender...) and the profile's level
words (`pitch_level`, `variation_level`, `rate_level`, `noise_level`), joined by utt_id. By
default: the speaker column, `language` and `gender` where carried, and the pitch, variation
and rate levels once the profile stage has finished.

Two rounds of work over the embeddings parts, one call per part on one CPU each (reading, and
for the second round an untrained encoder's forward passes, which torch runs on one thread):
the first returns only sampling positions, from which the driver picks the cutoff of the
`max_utterances` sample; the second returns the vectors of the utterances up to it. The driver
then scores them (`metrics.py`).
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import asdict, replace

import numpy as np

from ..config import PipelineConfig
from ..encoder import EmbeddingNormalization
from ..errors import ConfigError, TooFewLabelsError
from ..executors import Executor, RayExecutor, Resources
from ..layout import RunLayout
from ..pipeline import output_of
from ..profiles import find_speaker_column
from ..stages.embed import encoder_uri as embedding_encoder, load_normalization
from ..stages.registry import SPECS
from ..stages.train import TRAINING_RECORD
from ..storage import Location, redact_uri
from ..tables import carried_columns, read_schema, read_settings, row_count
from .metrics import DEFAULT_MAX_PAIRS, DEFAULT_MAX_QUERIES, retrieval_figures
from .parts import PROFILE_LABELS, PartCandidates, PartsSpec, candidate_positions, part_vectors
from .report import counts_line, labels_table, results_table, write_outputs
from .representations import UNTRAINED_SEED, compared
from .selection import SAMPLE_SEED, Holdout, cutoff

UTTERANCES = ("heldout", "all")
DEFAULT_MAX_UTTERANCES = 20_000
NOT_HELD_OUT = "not held out: the encoder saw these utterances"
PART_RESOURCES = Resources(num_cpus=1.0)
SAMPLE_MARGIN = 8  # the sampling positions read per utterance sampled, at first
READS = ("features", "tokens", "embed")  # the stages whose tables evaluate reads
SCORING_SEED = 0  # pair sample and 1-NN query sample
# what the default labels add to the speaker column: carried columns, then profile levels
DEFAULT_CARRIED_LABELS = ("language", "gender")
DEFAULT_PROFILE_LABELS = ("pitch_level", "variation_level", "rate_level")

log = logging.getLogger(__name__)


def run_evaluation(cfg: PipelineConfig, label: str | None = None, utterances: str = "heldout",
                   max_utterances: int = DEFAULT_MAX_UTTERANCES,
                   max_pairs: int = DEFAULT_MAX_PAIRS, executor: Executor | None = None) -> dict:
    """Score the embeddings and the baselines on `label` (default: the speaker column, as the
    profile stage finds it); write and return every figure."""
    if utterances not in UTTERANCES:
        raise ConfigError(f"utterances must be one of {', '.join(UTTERANCES)}, "
                          f"got {utterances!r}")
    if max_utterances < 2 or max_pairs < 1:
        raise ConfigError(f"max_utterances must be >= 2 and max_pairs >= 1, got {max_utterances} "
                          f"and {max_pairs}")
    opts = cfg.storage.storage_options
    out = output_of(cfg)
    parts = _embeddings_parts(out)
    first = out.child("embeddings", parts[0])
    carried = carried_columns(read_schema(first))
    if label is None:
        label = _speaker_label(carried, cfg.profile.speaker_column)
    available = _labels_available(out, carried)
    if label not in available:
        raise ConfigError(f"no label column {label!r} in {out.uri}: the labels there are "
                          f"{', '.join(available) or 'none'}")
    # the encoder that made the embeddings, as their table records it
    encoder_uri = read_settings(first).get("checkpoint") or (
        embedding_encoder(cfg.embed.checkpoint, out) if cfg.embed.checkpoint
        else out.child("encoder").uri)
    record = _training_record(encoder_uri, opts)
    # an encoder trained on another run's tokens never saw these utterances (unless the two
    # corpora share recordings): all of them are held out, whatever its own split
    elsewhere = record.get("trained_on") not in (None, redact_uri(out.uri))
    split = None if elsewhere else Holdout.of(record)
    holdout = split if utterances == "heldout" else None
    if holdout is not None and holdout.key not in ("utt_id", *carried):
        raise ConfigError(f"the encoder's validation split is keyed by {holdout.key!r}, which the "
                          f"tables do not carry; use --utterances all")
    which = "unseen" if elsewhere else "heldout" if holdout is not None else "all"
    if elsewhere:
        log.info("evaluate: the encoder was trained on %s: every utterance here is unseen by it",
                 record["trained_on"])
    elif utterances == "heldout" and holdout is None:
        log.info("evaluate: the encoder records no validation split; evaluating all utterances "
                 "(%s)", NOT_HELD_OUT)
    spec = PartsSpec(out, label, holdout, max_utterances, read_settings(first)["model"],
                     cfg.embed.batch_tokens)
    executor = executor or RayExecutor.of(cfg.ray)
    log.info("evaluate: %s over %s utterances of %d parts", label, which, len(parts))
    found, last, gathered = _gather(executor, parts, spec, which)
    labels = [lab for g in gathered for lab in g["label"]]
    vectors = {k: np.concatenate([g[k] for g in gathered]) for k in gathered[0] if k != "label"}
    normalization, normalization_doc = _normalization(encoder_uri, opts, vectors["embeddings"])
    representations = compared(vectors, normalization)
    log.info("evaluate: scoring %d representations", len(representations))
    counts = sum((Counter(f.counts) for f in found), Counter())
    per_label = np.unique(labels, return_counts=True)[1]
    doc = {
        "label": label,
        "utterances": {"requested": utterances, "which": which,
                       "held_out": which in ("heldout", "unseen"),
                       "trained_on": record.get("trained_on"),
                       "validation": None if holdout is None else asdict(holdout),
                       "seen": counts["seen"], "unlabelled": counts["unlabelled"],
                       "left_out_as_trained_on": counts["trained_on"], "evaluated": len(labels),
                       "sampled": bool(np.isfinite(last)), "max_utterances": max_utterances},
        "labels": {"count": len(per_label), "min_per_label": int(per_label.min()),
                   "median_per_label": float(np.median(per_label)),
                   "max_per_label": int(per_label.max()),
                   "with_one_utterance": int(np.count_nonzero(per_label == 1))},
        "normalization": normalization_doc,
        "settings": {"output": redact_uri(out.uri), "encoder": redact_uri(encoder_uri),
                     "scoring": "cosine", "max_pairs": max_pairs,
                     "max_queries": DEFAULT_MAX_QUERIES,
                     "scoring_seed": SCORING_SEED, "sample_seed": SAMPLE_SEED,
                     "untrained_seed": UNTRAINED_SEED, "model": spec.model_config},
        "representations": {name: {"dim": int(x.shape[1]),
                                   **retrieval_figures(x, labels, max_pairs, DEFAULT_MAX_QUERIES,
                                                       SCORING_SEED)}
                            for name, x in representations.items()},
    }
    doc["caveats"] = _caveats(doc, holdout, split)
    folder = out.child("evaluation", label)
    write_outputs(folder, doc)
    for line in ["", counts_line(doc), results_table(doc), *[f"- {c}" for c in doc["caveats"]],
                 f"-> {folder.uri}/evaluation.md, evaluation.json, roc_det.png"]:
        log.info(line)
    return doc


def run_evaluations(cfg: PipelineConfig, labels: list[str] | None = None,
                    utterances: str = "heldout", executor: Executor | None = None,
                    **limits) -> dict[str, dict]:
    """`run_evaluation` for each of `labels` (default: `default_labels`), one after another;
    with several, their AUCs side by side in `OUTPUT/evaluation/summary.md`. A default label
    that has fewer than two values among the evaluated utterances is left out, with a line."""
    asked = bool(labels)
    labels = labels or default_labels(cfg)
    executor = executor or RayExecutor.of(cfg.ray)
    docs = {}
    for label in labels:
        try:
            docs[label] = run_evaluation(cfg, label, utterances, executor=executor, **limits)
        except TooFewLabelsError as exc:
            if asked:
                raise
            log.info("evaluate: %s left out: %s", label, exc)
    if len(docs) > 1:
        table = labels_table(docs)
        folder = output_of(cfg).child("evaluation")
        folder.child("summary.md").write_atomic(
            f"# Which labels the embeddings tell apart\n\nAUC ± SE by label ({utterances} "
            f"utterances; each label's folder has the rest).\n\n{table}\n".encode())
        for line in ["", "AUC ± SE by label:", table, f"-> {folder.uri}/summary.md"]:
            log.info(line)
    return docs


def default_labels(cfg: PipelineConfig) -> list[str]:
    """The speaker column (when one is found), `language` and `gender` where carried, and the
    profile's pitch, variation and rate levels when the profile stage has finished."""
    out = output_of(cfg)
    carried = carried_columns(read_schema(out.child("embeddings", _embeddings_parts(out)[0])))
    speaker = find_speaker_column(carried, cfg.profile.speaker_column).name
    available = _labels_available(out, carried)
    labels = [*([speaker] if speaker else []),
              *(c for c in (*DEFAULT_CARRIED_LABELS, *DEFAULT_PROFILE_LABELS) if c in available)]
    if not labels:
        raise ConfigError(f"no label to evaluate in {out.uri}: no speaker column found and no "
                          "profile levels; name a carried column with --label")
    log.info("evaluate: labels %s", ", ".join(labels))
    return labels


def _labels_available(out: Location, carried: list[str]) -> list[str]:
    profiled = RunLayout(out).completed("profile") is not None
    return [*carried, *(PROFILE_LABELS if profiled else ())]


def _speaker_label(carried: list[str], configured: str | None) -> str:
    found = find_speaker_column(carried, configured)
    if found.name is None:
        carry = ", ".join(carried) or "no metadata columns"
        raise ConfigError(f"no --label given and {found}: name the column to tell apart with "
                          f"--label (the tables carry {carry})")
    log.info("evaluate: label %r, the %s", found.name, found)
    return found.name


def _gather(executor: Executor, parts: list[str], spec: PartsSpec,
            which: str) -> tuple[list[PartCandidates], float, list[dict]]:
    """Both rounds over the parts: (every part's candidates, the sample's cutoff, the chosen
    utterances' vectors per part). Stops before the expensive round when fewer than 2 labels
    are among the chosen."""
    # positions are uniform in [0, 1): a part need report only those below a bound that leaves
    # several times the sample among all parts (raised, and the parts read again, when the
    # candidates are fewer: most held out of a small corpus's training, a label often null)
    rows = sum(executor.parallel(_row_count, parts, PART_RESOURCES, spec))
    bound = min(1.0, SAMPLE_MARGIN * spec.max_utterances / max(rows, 1))
    while True:
        spec = replace(spec, position_bound=bound)
        found = executor.parallel(candidate_positions, parts, PART_RESOURCES, spec)
        if bound >= 1.0 or sum(len(f.positions) for f in found) > spec.max_utterances:
            break
        bound = min(1.0, bound * 4)
    last = cutoff([f.positions for f in found], spec.max_utterances)
    chosen = sum(int(np.count_nonzero(f.positions <= last)) for f in found)
    labels = {lab for f in found for lab, position in f.first_of_label.items() if position <= last}
    if len(labels) < 2:
        hint = (" (held-out utterances only; --utterances all evaluates every one)"
                if which == "heldout" else "")
        raise TooFewLabelsError(f"fewer than 2 distinct {spec.label!r} labels among the "
                                f"{chosen} labelled utterances{hint}: nothing to tell apart")
    log.info("evaluate: %d utterances, %d labels; computing their vectors", chosen, len(labels))
    items = [(p, last) for p, f in zip(parts, found) if len(f.positions) and f.positions[0] <= last]
    return found, last, executor.parallel(part_vectors, items, PART_RESOURCES, spec)


def _row_count(part: str, spec: PartsSpec) -> int:
    return row_count(spec.output.child("embeddings", part))


def _embeddings_parts(out: Location) -> list[str]:
    """The embeddings part names, once every stage evaluate reads has finished."""
    for name in READS:
        if RunLayout(out).completed(name) is None:
            raise ConfigError(f"evaluate needs a complete '{name}' stage in {out.uri}; run "
                              f"`timbrespace-ray {name}` first (or `timbrespace-ray run`)")
    folder = out.child(SPECS["embed"].folder)
    parts = [n for n in folder.list_names() if n.startswith("part-") and n.endswith(".parquet")]
    if not parts:
        raise ConfigError(f"{folder.uri} holds no parts: no utterance to evaluate")
    return parts


def _training_record(encoder_uri: str, opts: dict) -> dict:
    """The encoder's training.json ({} for an encoder without one: the original's .ckpt)."""
    record = Location.of(encoder_uri, opts).child(TRAINING_RECORD)
    return record.read_json() if record.exists() else {}


def _normalization(encoder_uri: str, opts: dict,
                   embedded: np.ndarray) -> tuple[EmbeddingNormalization, dict]:
    """The encoder folder's normalisation, else a centring fitted on the evaluated utterances."""
    stored = load_normalization(encoder_uri, opts)
    if stored is not None:
        return stored, {"source": "encoder", "method": stored.method, "fitted_on": stored.fitted_on}
    fitted = EmbeddingNormalization.fit(embedded, method="center")
    return fitted, {"source": "fitted on the evaluated utterances", "method": "center",
                    "fitted_on": fitted.fitted_on}


def _caveats(doc: dict, holdout: Holdout | None, split: Holdout | None) -> list[str]:
    """`holdout`: the split the utterances were chosen by; `split`: the encoder's, if any."""
    label, reps = doc["label"], doc["representations"]
    first = next(iter(reps.values()))
    caveats = []
    trained_on = doc["utterances"]["trained_on"]
    if doc["utterances"]["which"] == "unseen":
        caveats.append(f"the encoder was trained on {trained_on}: these utterances are unseen by "
                       "it unless the two corpora share recordings")
    elif holdout is None:
        but = "" if split is None else f" (all but its {split.fraction:.0%} validation share)"
        caveats.append(f"{NOT_HELD_OUT}{but}: its figures may be optimistic")
    elif holdout.key != label:
        caveats.append(f"held out by {holdout.key}: the encoder may have seen other utterances "
                       f"of the same {label}")
    if doc["normalization"]["source"] != "encoder":
        caveats.append("no normalisation stored with the encoder: 'embeddings, normalised' is "
                       "centred on the evaluated utterances themselves")
    caveats.append("the baselines' normalisations (z-scores, centring) are fitted on the "
                   "evaluated utterances themselves, which can only favour them")
    if doc["utterances"]["sampled"]:
        caveats.append(f"a sample of {doc['utterances']['evaluated']} utterances (by a hash of "
                       f"utt_id), not all")
    if first["pairs"]["sampled"]:
        caveats.append(f"AUC and EER over a uniform sample of {first['pairs']['scored']} of "
                       f"{first['pairs']['total']} pairs")
    nn = first["nearest_neighbour"]
    if nn["excluded"]:
        caveats.append(f"{nn['excluded']} utterances whose {label} no other utterance has are "
                       "not 1-NN queries (they still count as neighbours and in pairs)")
    if nn["sampled"]:
        caveats.append(f"1-NN accuracy over a sample of {nn['queries']} queries")
    if doc["utterances"]["evaluated"] < 100:
        caveats.append(f"only {doc['utterances']['evaluated']} utterances: the figures are rough")
    return caveats
