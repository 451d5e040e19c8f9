"""The sentences a review page adds so that no figure is read out of context: which checkpoints are hidden
(and how to hear them), which checkpoints training no longer keeps, what a codec's evaluate metrics and
samples were measured on, and what the LM loss charts' unigram baseline is.
"""

from __future__ import annotations

from pathlib import Path

from tunesmith.review.baseline import UnigramBaseline
from tunesmith.review.charts import Baseline, Figures
from tunesmith.review.checkpoints import CheckpointRef
from tunesmith.review.grid import distinct_checkpoints
from tunesmith.review.run_config import config_section

UNIGRAM_LABEL = "unigram (train codes)"


def hidden_checkpoints_note(all_refs: list[CheckpointRef], shown: list[CheckpointRef], run_dir: Path) -> str:
    """``showing 3 of 5 checkpoints — rerun with --epochs all to hear every one`` when ``--epochs`` left some out."""
    total, count = len(distinct_checkpoints(all_refs)), len(distinct_checkpoints(shown))
    if count >= total:
        return ""
    return (
        f"showing {count} of {total} checkpoints — rerun with --epochs all to hear every one: "
        f"tunesmith review {run_dir} --epochs all"
    )


def pruned_checkpoints_note(all_refs: list[CheckpointRef], config: dict, trained_epochs: int) -> str:
    """Which numbered checkpoints training deleted (``train.checkpoint.keep_last``), so no review can play them."""
    from tunesmith.review.checkpoints import _NUMBERED

    c = config_section(config, "train", "checkpoint")
    every, keep = int(c.get("every_epochs") or 0), int(c.get("keep_last") or 0)
    if every <= 0 or keep <= 0:
        return ""
    kept = {r.epoch for r in all_refs if _NUMBERED.match(r.name)}
    gone = [e for e in range(every, trained_epochs + 1, every) if e not in kept]
    if not gone:
        return ""
    if len(gone) == 1:
        listed = f"epoch {gone[0]}"
    elif len(gone) <= 4:
        listed = "epochs " + ", ".join(str(e) for e in gone)
    else:
        listed = f"{len(gone)} epochs from {gone[0]} to {gone[-1]}"
    plural = len(gone) > 1
    return (
        f"{listed}: {'their' if plural else 'its'} numbered checkpoint{'s' if plural else ''} no longer "
        f"exist{'' if plural else 's'}, as training keeps the newest {keep} (train.checkpoint.keep_last={keep}; "
        "0 keeps every one, in a new run or a resumed one)"
    )


def codec_clip_notes(
    config: dict, review_clips: tuple[int, float, float] | None, num_clips: int | None
) -> tuple[str, str, str]:
    """(curves note, short per-figure note for evaluate-stage figures, samples note) of a codec run.

    The evaluate stage measures ``check.num_samples`` valid clips cut to ``check.max_seconds`` — the same clips
    the review reconstructs unless ``--num-prompts`` chose another number; ``tunesmith check codec`` measures
    its own clips (10 of ≤ 10 s by default), so its figures, code perplexity above all, differ."""
    from tunesmith.eval.codec import CHECK_MAX_SECONDS, CHECK_NUM_SAMPLES

    check = config_section(config, "check")
    n_cfg, max_s = int(check.get("num_samples") or 0), float(check.get("max_seconds") or 0.0)
    data = str(config.get("data") or "?")
    same = review_clips is not None and (num_clips is None or num_clips == n_cfg)
    short = f"evaluate: {n_cfg} valid clips ≤ {max_s:g} s"
    if same and review_clips is not None:
        short += f", {review_clips[1]:.1f} s in all"
    curves = (
        f"Evaluate-stage figures (SI-SNR, mel, L1, MSE, code perplexity code_ppl_qK) are measured during training "
        f"on the run's check clips: {n_cfg} clips spread over the valid split of {data}, each cut to ≤ {max_s:g} s "
        f"(check.num_samples={n_cfg}, check.max_seconds={max_s:g})"
        + (
            f", {review_clips[0]} clips and {review_clips[1]:.1f} s of audio in all: the clips of the samples below"
            if same and review_clips is not None
            else ""
        )  # fmt: skip
        + f". `tunesmith check codec` measures its own clips ({CHECK_NUM_SAMPLES} of ≤ {CHECK_MAX_SECONDS:g} s by "
        f"default), so its figures differ — code perplexity most, as it grows with the audio measured; give it "
        f"--num-samples {n_cfg} --max-seconds {max_s:g} to measure these clips. Valid-stage figures are means over "
        f"fixed crops of the valid split (dataset.segment_seconds, train.valid_max_batches)."
    )
    if review_clips is None:
        samples = ""
    else:
        n, total, longest = review_clips
        samples = (
            f"{n} valid clips of {data}, {total:.1f} s in all (the longest {longest:.1f} s)"
            + (
                ", the clips of the evaluate-stage figures above"
                if same
                else f"; chosen with --num-prompts {num_clips}, while the evaluate stage measures {n_cfg}"
            )  # fmt: skip
            + "."
        )
    return curves, short, samples


def add_clip_notes(figures: Figures, short: str) -> None:
    """Mark every chart with evaluate-stage points with ``short`` (what they were measured on)."""
    for chart in figures.charts:
        if "evaluate" in chart.stages:
            chart.note = short


def add_unigram_baseline(figures: Figures, baseline: UnigramBaseline) -> None:
    """The baseline as a dashed line on the loss, per-codebook CE and perplexity charts."""
    for chart in figures.charts:
        if chart.metrics == ["loss"]:
            chart.baselines.append(Baseline(UNIGRAM_LABEL, baseline.mean))
        elif chart.metrics == ["ppl"]:
            chart.baselines.append(Baseline(UNIGRAM_LABEL, baseline.perplexity))
        elif chart.metrics and all(m.startswith("ce_q") for m in chart.metrics):
            for series in chart.series:
                k = int(series.label[1:]) if series.label[1:].isdigit() else -1
                if 0 <= k < len(baseline.per_codebook):
                    chart.baselines.append(Baseline(UNIGRAM_LABEL, baseline.per_codebook[k], match=series.label))


def unigram_note(baseline: UnigramBaseline) -> str:
    per = ", ".join(f"q{k} {v:.3f}" for k, v in enumerate(baseline.per_codebook))
    return (
        f"Dashed lines: the unigram baseline, {baseline.mean:.3f} nats per code (perplexity {baseline.perplexity:.1f};"
        f" per codebook {per}): the cross-entropy of predicting each codebook's codes by their frequency in the "
        f"training token cache ({baseline.tokens:,} codes of {baseline.source}), in the units of the logged loss "
        "(natural log, mean over real codes, padding excluded). A loss above it has learned nothing from context yet."
    )
