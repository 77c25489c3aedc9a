"""`timbrespace-ray demo` as a person sees it in a terminal: a live bar per stage, no Ray chatter,
under 80 lines, ending with the stage table and the report's path."""
import re

import pytest

from helpers.terminal import RAY_LINE

pytestmark = pytest.mark.slow


def test_the_demo_fits_on_a_screen_and_ends_with_the_table_and_the_report(demo):
    out, raw, lines = demo
    assert len(lines) < 80, "\n".join(lines)
    assert lines[-1] == f"Report: {out / 'report.md'}" and (out / "report.md").exists()
    table = next(i for i, line in enumerate(lines) if line.startswith("stage "))
    assert [line.split()[0] for line in lines[table + 2:table + 8]] == [
        "features", "profile", "kmeans", "tokens", "train", "embed"]


def test_each_stage_draws_a_live_bar_and_no_line_per_unit(demo):
    _, raw, lines = demo
    for bar in ("features:", "tokens:", "embed:", "train:"):
        assert re.search(re.escape(bar) + r"\s+\d+%\|", raw), bar
    assert not [line for line in lines if re.match(r"\[\w[\w-]*\] \d+/\d+ ", line)]


def test_no_line_twice_in_a_row_and_no_ray_chatter(demo):
    _, _, lines = demo
    repeated = [a for a, b in zip(lines, lines[1:]) if a == b and a.strip()]
    assert not repeated
    assert not [line for line in lines if RAY_LINE.search(line)]
    # training speaks from its workers through the driver, once: Ray Train's print patch would
    # repeat every line a worker printed
    assert len([line for line in lines if re.match(r"train: [\d.]+ M parameters, ", line)]) == 1


def test_the_report_agrees_with_its_tables(demo):
    """Pitch from pitch_hz (the profiles' pitch, not the f0 feature), and a caption on the
    evaluation that names the representation its table ranks first."""
    import json

    import duckdb

    out, _, _ = demo
    report = (out / "report.md").read_text()
    query = report[report.index("```sql"):].split("\n", 1)[1].split("```")[0]
    first, _ = query.split(";", 1)
    by_speaker = dict(duckdb.sql(f"select speaker, pitch_hz from ({first}\n)").fetchall())
    profiles = dict(duckdb.sql(f"select speaker, median(pitch_median_hz) from "
                               f"'{out}/profiles/*.parquet' group by speaker").fetchall())
    assert by_speaker.keys() == profiles.keys()
    for speaker, hz in profiles.items():
        assert by_speaker[speaker] == pytest.approx(hz, rel=1e-6), speaker
    assert "320 + 80" not in report
    aucs = {name: r["auc"] for name, r in json.loads(
        (out / "evaluation" / "speaker" / "evaluation.json").read_text())["representations"].items()
        if r["auc"] is not None}
    best = max(aucs, key=aucs.get)
    said = re.search(r"On this sample, (by AUC, (.+?) comes first|the (embeddings) come first)",
                     " ".join(report.split()))
    assert said and best == (said.group(2) or said.group(3)), (best, said)
    # figures from a set large enough to mean something: the shipped encoder's, said in words
    from timbrespace_ray.encoder.codebook import shipped_card

    sets = shipped_card()["sets"]
    ahead = sum(d["speaker"]["embeddings, fine-tuned from the shipped encoder"]["auc"] > max(
        d["speaker"][b]["auc"] for b in ("feature statistics", "bag of tokens", "untrained encoder"))
        for d in sets.values())
    section = report[report.index("## On voices never heard"):]
    assert f"lead the best baseline on {ahead} of {len(sets)} sets" in " ".join(section.split())
    for name, d in sets.items():
        assert f"| {name}" in section and f"{d['speaker']['bag of tokens']['auc']:.3f}" in section
