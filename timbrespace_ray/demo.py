"""The demo: the whole pipeline over the bundled recordings on an embedded local Ray, then a
Markdown report with pictures of every stage's output."""
from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import numpy as np

from .stages.registry import SPECS

log = logging.getLogger(__name__)

DEMO_CORPUS = Path(__file__).parent / "demo_corpus"
DEMO_CONFIG = Path(__file__).parent / "demo.yaml"
# the recordings with their speaker, corpus and language: carried into every table
DEMO_MANIFEST = DEMO_CORPUS / "manifest.csv"
# speakers by median pitch and rate, from the profile stage's table
PROFILE_QUERY = """select speaker, count(*) as utterances,
       median(pitch_median_hz) as pitch_hz, median(onsets_per_s) as onsets_per_s,
       mode(description) as most_frequent_description
from '{out}/profiles/*.parquet' group by speaker order by pitch_hz;"""


def run_demo(output: str, config: str | None = None, **overrides) -> None:
    """The demo into `output`; `overrides`: dotted config keys (e.g. "ray.num_cpus": 2)."""
    from .config import load_config
    from .evaluation.run import run_evaluation
    from .executors import RayExecutor
    from .pipeline import run_pipeline

    out = Path(output).resolve()
    cfg = load_config(config or str(DEMO_CONFIG), input=str(DEMO_MANIFEST), output=str(out),
                      **overrides)
    log.info("timbrespace-ray demo: %d bundled recordings -> %s",
             len(list(DEMO_CORPUS.glob("*.wav"))), out)
    t0 = time.perf_counter()
    timings = {}
    with RayExecutor.of(cfg.ray) as executor:  # closed before the report's lines
        results = run_pipeline(cfg, executor,
                               on_stage_done=lambda name, secs: timings.__setitem__(name, secs))
        # all recordings: most speakers have one, so a held-out share would leave none to
        # compare
        log.info("==> evaluate")
        evaluation = run_evaluation(cfg, "speaker", utterances="all", executor=executor)
    total = time.perf_counter() - t0
    report = write_report(out, results, timings, evaluation)
    for line in ("", *summary_table(results, timings).splitlines(), "", f"total {total:.0f} s",
                 f"Report: {report}"):
        log.info(line)


def summary_table(results: dict, timings: dict) -> str:
    rows = [("stage", "output", "rows", "errors", "seconds")]
    for name, res in results.items():
        d = res.detail
        if name == "kmeans":
            what = f"k={d['n_clusters']} on {d['frames']} frames"
        elif name == "train":
            what = f"{d['step']} steps, loss {d['final_loss']:.3f}"
        else:
            what = str(res.rows)
        rows.append((name, SPECS[name].folder, what, str(res.errors_total),
                     f"{timings.get(name, 0):.1f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_report(out: Path, results: dict, timings: dict, evaluation: dict) -> Path:
    import duckdb
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .encoder.codebook import shipped_card
    from .evaluation.report import card_section, counts_line, ranking, results_table
    from .features import FEATURE_NAMES, FeatureConfig
    from .features.pitch import PITCH_COLUMN
    from .features.plot import plot_features

    figs = out / "report"
    figs.mkdir(exist_ok=True)
    con = duckdb.connect()
    # 1. feature contours of one utterance (the longest LibriVox one)
    utt, pitch_hz, *values = con.sql(
        f"select utt_id, {PITCH_COLUMN}, {', '.join(FEATURE_NAMES)} from "
        f"'{out}/features/*.parquet' where utt_id like '%librivox%' order by n_frames desc "
        "limit 1").fetchall()[0]
    from .audio import decode_audio

    audio, _, _ = decode_audio(str(DEMO_CORPUS / utt))
    plot_features({k: np.asarray(v) for k, v in zip(FEATURE_NAMES, values)}, FeatureConfig(),
                  title=utt, save_path=str(figs / "features.png"), audio=audio,
                  pitch_hz=np.asarray(pitch_hz))
    # 2. the cluster plot, from the k-means stage
    shutil.copy(out / "kmeans" / "clusters.png", figs / "clusters.png")
    # 3. token histogram
    counts = con.sql(f"select t, count(*) from (select unnest(tokens) as t from "
                     f"'{out}/tokens/*.parquet') group by t order by t").fetchall()
    fig, ax = plt.subplots(figsize=(10, 3.5))
    ax.bar([c[0] for c in counts], [c[1] for c in counts], color="tab:blue")
    ax.set_xlabel("token (k-means cluster)")
    ax.set_ylabel("frames")
    ax.set_title("Token histogram over the demo corpus")
    fig.tight_layout()
    fig.savefig(figs / "tokens.png", dpi=110)
    plt.close(fig)
    # 4. embeddings in 2-D (PCA of the per-utterance mean of window embeddings)
    rows = con.sql(f"select utt_id, speaker, embedding, n_frames from '{out}/embeddings/*.parquet'").fetchall()
    by_utt: dict[str, list] = {}
    speaker = {u: s for u, s, _, _ in rows}
    for u, _, e, n in rows:
        by_utt.setdefault(u, []).append(np.asarray(e) * n)
    ids = sorted(by_utt)
    x = np.stack([np.sum(by_utt[u], 0) for u in ids])
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    xc = x - x.mean(0)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    xy = xc @ vt[:2].T
    fig, ax = plt.subplots(figsize=(7, 5.5))
    groups = sorted(set(speaker.values()))
    for g, color in zip(groups, plt.cm.tab10.colors):
        pts = np.array([xy[i] for i, u in enumerate(ids) if speaker[u] == g])
        ax.scatter(pts[:, 0], pts[:, 1], s=60, color=color, label=g)
    ax.legend(fontsize=8)
    ax.set_title("Utterance embeddings (PCA), coloured by the manifest's speaker column")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    fig.tight_layout()
    fig.savefig(figs / "embeddings.png", dpi=110)
    plt.close(fig)

    kmeans = results["kmeans"].detail
    report = out / "report.md"
    report.write_text(f"""# timbrespace_ray demo report

{len(ids)} bundled recordings through the whole pipeline on an embedded local Ray.

```
{summary_table(results, timings)}
```

## Features: {utt}
Six prosodic features per 16 ms frame: the f1 and f2 features over the spectrogram (in Hz);
the pitch track `pitch_hz` beside the f0 feature (the lowest formant-like peak, in Hz: not the
pitch, an octave high on some utterances); f0_width, power and snr in their normalised units.

![features](report/features.png)

## k-means (k = {kmeans['n_clusters']}, {kmeans['frames']} frames, silhouette {kmeans['silhouette'] or 0:.2f})
Full report: `kmeans/report.txt`, `kmeans/quality.json`.

![clusters](report/clusters.png)

## Tokens

![tokens](report/tokens.png)

## Embeddings
One point per utterance (mean of its window embeddings). The five LibriVox files are one reader.

![embeddings](report/embeddings.png)

{profile_section(out, figs)}

## Does the embedding tell speakers apart?
`timbrespace-ray evaluate --label speaker --utterances all`: cosine scores between utterances,
the embeddings against simple baselines (full output: `evaluation/speaker/evaluation.md`).

{results_table(evaluation)}

{counts_line(evaluation)}.

A tiny sample: {len(ids)} recordings, {evaluation['labels']['with_one_utterance']} of the
{evaluation['labels']['count']} speakers with a single one, so only the LibriVox reader's
recordings make same-speaker pairs and 1-NN queries; and the encoder was trained on (nearly) all
of them. On this sample, {ranking(evaluation)}. The table shows that the evaluation runs end to
end, not how well the method works.

![ROC and DET](evaluation/speaker/roc_det.png)

## On voices never heard
How well the embeddings tell speakers apart is measured on the evaluation suite
(docs/embeddings.md): sets of real speech split by speaker, whose held-out voices no encoder
or k-means model saw.

{card_section(shipped_card())}

## Query it yourself
The input was `demo_corpus/manifest.csv`; its `speaker`, `corpus` and `language` columns are
columns of every table.
```sql
-- duckdb
select speaker, count(*) as utterances, sum(duration_s) as seconds,
       median(list_median(list_filter(pitch_hz, lambda x: x > 0))) as pitch_hz
from '{out}/features/*.parquet' group by speaker order by seconds desc;

{PROFILE_QUERY.format(out=out)}
```
""")
    return report


def profile_section(out: Path, figs: Path) -> str:
    """The report's "Style profiles" section from `out`'s profiles/ (and speakers/, when the
    corpus carries a speaker column): its pictures written into `figs` (a folder of `out`), its
    Markdown returned."""
    from .profiles.plots import (example_descriptions, examples_markdown, plot_levels,
                                 plot_speakers, speakers_markdown)

    profiles = _read_parts(out / "profiles")
    plot_speakers(profiles, figs / "profile_speakers.png")
    plot_levels(profiles, figs / "profile_levels.png")
    pictures = figs.relative_to(out)
    n = profiles.num_rows
    speakers = ""
    if (out / "speakers").is_dir():
        speakers = f"""
### Speakers (`speakers/`)
Each speaker's medians over their utterances, and the levels of those medians.

{speakers_markdown(_read_parts(out / "speakers"))}
"""
    return f"""## Style profiles
`profiles/`: every utterance in physical units and plain words (pitch in Hz from the `pitch_hz`
track, not the Timbrespace f0 feature; voiced onsets per second of speech; pauses; SNR in dB),
four levels and a one-line description. The levels are sevenths of this corpus (edges in
`_run/profile/bins.json`): with {n} utterances each holds about {n / 7:.1f}, so the words compare
these recordings with one another, not with speech in general.

![pitch and rate per speaker]({pictures}/profile_speakers.png)

![levels]({pictures}/profile_levels.png)

A few distinct descriptions, the most different first (`utterances`: how many share it):

{examples_markdown(example_descriptions(profiles))}
{speakers}"""


def _read_parts(folder: Path):
    """A folder's parquet parts as one pyarrow Table (empty without parts)."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    parts = sorted(str(p) for p in folder.glob("*.parquet"))
    return ds.dataset(parts, format="parquet").to_table() if parts else pa.table({})
