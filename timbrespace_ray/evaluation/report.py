"""The evaluation's outputs: the results table, `evaluation.md`, `roc_det.png` and
`evaluation.json`."""
from __future__ import annotations

import io
import json
from statistics import NormalDist

import numpy as np

from ..storage import Location

DESCRIPTIONS = {
    "embeddings": "the embed stage's window embeddings, token-weighted mean per utterance",
    "embeddings, normalised": "that vector through the encoder's normalisation",
    "feature statistics": "mean and standard deviation of the six features where measured, "
                          "z-scored",
    "bag of tokens": "token histogram as frequencies, square-rooted (Hellinger), centred",
    "untrained encoder": "an encoder of the same shape with its initial random weights (seed 0)",
    "untrained encoder, centred": "that vector with the evaluated utterances' mean removed",
}
# DET axes: rates on a probit scale, as is usual for detection trade-offs
DET_TICKS = [0.001, 0.01, 0.05, 0.2, 0.4, 0.6, 0.8, 0.95]
DET_LIMITS = (0.0005, 0.99)


def results_table(doc: dict) -> str:
    """The Markdown table: one row per representation, each figure with its standard error."""
    rows = [("representation", "dim", "AUC ± SE", "EER ± SE", "1-NN acc ± SE")]
    for name, r in doc["representations"].items():
        nn = r["nearest_neighbour"]
        rows.append((name, str(r["dim"]), _with_error(r["auc"], r.get("auc_stderr"), "{:.3f}"),
                     _with_error(r["eer"], r.get("eer_stderr"), "{:.1%}"),
                     _with_error(nn["accuracy"], nn["stderr"], "{:.1%}")))
    return _markdown(rows)


def labels_table(docs: dict[str, dict]) -> str:
    """Markdown: one row per representation, one column per label, AUC ± SE."""
    labels = list(docs)
    names = list(dict.fromkeys(n for d in docs.values() for n in d["representations"]))
    rows = [("representation", *labels)]
    for name in names:
        cells = []
        for label in labels:
            r = docs[label]["representations"].get(name)
            cells.append("n/a" if r is None else _with_error(r["auc"], r.get("auc_stderr"),
                                                                "{:.3f}"))
        rows.append((name, *cells))
    return _markdown(rows)


# the model card's row for what `run` makes with the defaults, and its baselines
DEFAULT_EMBEDDINGS = "embeddings, fine-tuned from the shipped encoder"
CARD_BASELINES = ("feature statistics", "bag of tokens", "untrained encoder")


def card_section(card: dict | None) -> str:
    """Markdown: the shipped encoder's speaker figures on voices never heard (its
    `evaluation.json`: one row per set, one column per representation) and, in words from the
    same figures, where the default embeddings stand; or a line saying there are none."""
    sets = (card or {}).get("sets") or {}
    if not sets:
        return "No evaluation on voices never heard ships with this package."
    names = list(dict.fromkeys(n for d in sets.values() for n in d["speaker"]))
    rows = [("set", "held-out voices", "utterances", *names)]
    for name, d in sets.items():
        rows.append((name, str(d["voices"]), str(d["utterances"]),
                     *(_with_error(d["speaker"][n]["auc"], d["speaker"][n]["auc_stderr"],
                                   "{:.3f}") if n in d["speaker"] else "n/a" for n in names)))
    return (f"Speaker AUC ± SE, measured by {card['measured_by']} on {card['machine']} "
            f"({card['date']}).\n\n{_markdown(rows)}\n\n{card_verdict(sets)}")


def card_verdict(sets: dict) -> str:
    """Where the default embeddings stand against the best baseline of each set, in words."""
    lines, ahead = [], 0
    for name, d in sets.items():
        figures = d["speaker"]
        ours = figures.get(DEFAULT_EMBEDDINGS)
        baselines = [b for b in CARD_BASELINES if b in figures]
        if ours is None or not baselines:
            continue
        best = max(baselines, key=lambda b: figures[b]["auc"])
        margin = ours["auc"] - figures[best]["auc"]
        ahead += margin > 0
        lines.append(f"{name} {margin:+.3f} against {best}")
    if not lines:
        return "The card holds no figures of the default embeddings."
    said = (f"With the defaults (fine-tuned from the shipped encoder), the embeddings lead the "
            f"best baseline on {ahead} of {len(lines)} sets (AUC margin: {'; '.join(lines)}).")
    if ahead == 0:
        said += (" On voices never heard, a simple baseline tells speakers apart better than "
                 "these embeddings in every set.")
    return said


def _markdown(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _with_error(value: float | None, stderr: float | None, fmt: str) -> str:
    if value is None:
        return "n/a"
    return fmt.format(value) + ("" if stderr is None else " ± " + fmt.format(stderr))


def ranking(doc: dict, subject: str = "embeddings") -> str:
    """Where `subject` stands among the representations by AUC, in words, from the table's own
    figures (so that a caption beside the table cannot contradict it)."""
    scored = sorted(((r["auc"], name) for name, r in doc["representations"].items()
                     if r["auc"] is not None), reverse=True)
    place = next((i for i, (_, name) in enumerate(scored) if name == subject), None)
    if place is None:
        return f"the {subject} have no AUC"
    auc = scored[place][0]
    if place == 0:
        return f"the {subject} come first of {len(scored)} by AUC ({auc:.3f})"
    first_auc, first = scored[0]
    where = "last" if place == len(scored) - 1 else f"{_ordinal(place + 1)}"
    return (f"by AUC, {first} comes first ({first_auc:.3f}) and the {subject} {where} of "
            f"{len(scored)} ({auc:.3f})")


def _ordinal(n: int) -> str:
    return f"{n}{'tsnrhtdd'[(n // 10 % 10 != 1) * (n % 10 < 4) * n % 10::4]}"


def counts_line(doc: dict) -> str:
    u, labels = doc["utterances"], doc["labels"]
    pairs = next(iter(doc["representations"].values()))["pairs"]
    nn = next(iter(doc["representations"].values()))["nearest_neighbour"]
    return (f"{u['evaluated']} utterances ({u['which']}), {labels['count']} {doc['label']} labels "
            f"({labels['min_per_label']}-{labels['max_per_label']} utterances each), "
            f"{pairs['scored']} pairs scored ({pairs['target']} same-{doc['label']}), "
            f"{nn['queries']} 1-NN queries (chance {_or_na(nn['chance'], '{:.1%}')})")


def markdown(doc: dict) -> str:
    label, u = doc["label"], doc["utterances"]
    described = "\n".join(f"- **{name}**: {DESCRIPTIONS[name]}" for name in doc["representations"])
    caveats = "\n".join(f"- {c}" for c in doc["caveats"])
    return f"""# Does the embedding tell `{label}` apart?

{counts_line(doc)}.

{results_table(doc)}

AUC and EER: every pair of utterances (or a uniform sample of pairs) scored by cosine; a pair is
a target when both share a `{label}`; their standard errors come from a jackknife over the
labels (each left out in turn, or groups of them), since the pairs of one `{label}` are not
independent. 1-NN: leave-one-out, whether each utterance's most similar
other utterance shares its `{label}`; chance is what a neighbour drawn at random would score.
Utterances: {u['which']} ({u['seen']} in the embeddings, {u['unlabelled']} without a label,
{u['left_out_as_trained_on']} left out as the encoder's training data, {u['evaluated']}
evaluated).

{described}

## Caveats
{caveats}

![ROC and DET](roc_det.png)
"""


def plot_curves(doc: dict) -> bytes:
    """ROC and DET side by side, one curve per representation, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    probit = np.vectorize(NormalDist().inv_cdf)
    fig, (roc_ax, det_ax) = plt.subplots(1, 2, figsize=(12, 5.2))
    for name, r in doc["representations"].items():
        if r["roc"] is None:
            continue
        fpr, tpr = np.asarray(r["roc"]["fpr"]), np.asarray(r["roc"]["tpr"])
        style = "--" if name.startswith("untrained") else "-"
        roc_ax.plot(fpr, tpr, style, label=f"{name} (AUC {r['auc']:.3f})")
        det_ax.plot(probit(np.clip(fpr, *DET_LIMITS)), probit(np.clip(1 - tpr, *DET_LIMITS)),
                    style, label=f"{name} (EER {r['eer']:.1%})")
    roc_ax.plot([0, 1], [0, 1], ":", color="grey")
    roc_ax.set(xlabel="false accept rate", ylabel="true accept rate", xlim=(0, 1), ylim=(0, 1),
               title=f"ROC: same {doc['label']} vs different")
    ticks = probit(DET_TICKS)
    det_ax.plot(probit(DET_LIMITS), probit(DET_LIMITS), ":", color="grey")
    det_ax.set(xlabel="false accept rate", ylabel="false reject rate", xticks=ticks, yticks=ticks,
               xlim=probit(DET_LIMITS), ylim=probit(DET_LIMITS), title="DET (probit axes)")
    det_ax.set_xticklabels([f"{t:.1%}".replace(".0%", "%") for t in DET_TICKS])
    det_ax.set_yticklabels([f"{t:.1%}".replace(".0%", "%") for t in DET_TICKS])
    for ax in (roc_ax, det_ax):
        ax.legend(fontsize=8, loc="lower right" if ax is roc_ax else "upper right")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def write_outputs(folder: Location, doc: dict) -> None:
    # in the table's order (Location.write_json sorts keys)
    folder.child("evaluation.json").write_atomic(json.dumps(doc, indent=1).encode())
    folder.child("evaluation.md").write_atomic(markdown(doc).encode())
    folder.child("roc_det.png").write_atomic(plot_curves(doc))


def _or_na(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else fmt.format(value)
