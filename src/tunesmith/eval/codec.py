"""Reconstruction quality of a codec on dataset segments (`tunesmith check codec RUN_OR_MODEL`).

For each clip: encode → decode → SI-SNR, L1, MSE and mel distance against the original, per clip
and averaged, and (with an output folder) ``NNN_<name>.original.wav`` / ``NNN_<name>.reconstructed.wav``
pairs side by side plus ``report.json`` and ``report.md``.

SI-SNR convention: positive dB, higher is better (AudioCraft logs the negated value as ``sisnr``).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.errors import UserError

log = logging.getLogger(__name__)

SISNR_CONVENTION = "SI-SNR in dB, higher is better (AudioCraft logs its negation as 'sisnr')"
METRICS: tuple[str, ...] = ("sisnr", "mel", "l1", "mse")
CHECK_NUM_SAMPLES, CHECK_MAX_SECONDS = 10, 10.0  # `tunesmith check codec`'s clips by default (training: check.*)


@dataclass
class Clip:
    """A named waveform ``[C, T]`` float32 at the codec's sample rate."""

    name: str
    wav: np.ndarray


@dataclass
class ClipResult:
    name: str
    seconds: float
    sisnr: float
    mel: float
    l1: float
    mse: float
    original: str | None = None
    reconstructed: str | None = None


@dataclass
class CodebookUsage:
    """How much of one codebook the checked clips use: distinct codes, and the perplexity of their
    frequencies (exp of the entropy; ``bins`` if all codes were equally frequent, 1 if one code)."""

    codebook: int
    used: int
    bins: int
    perplexity: float


def codebook_usage(counts: np.ndarray) -> list[CodebookUsage]:
    """Per-codebook code counts ``[K, bins]`` → one :class:`CodebookUsage` each."""
    usage = []
    for k, row in enumerate(counts):
        total = row.sum()
        p = row[row > 0] / max(total, 1)
        perplexity = float(np.exp(-(p * np.log(p)).sum())) if total else 0.0
        usage.append(CodebookUsage(k, int((row > 0).sum()), int(row.shape[0]), perplexity))
    return usage


COLLAPSE_SHARE = 0.1  # a codebook whose code perplexity is below this share of its bins looks collapsed


@dataclass
class CheckReport:
    sample_rate: int
    bandwidth_kbps: float | None
    n_q: int
    clips: list[ClipResult] = field(default_factory=list)
    codebooks: list[CodebookUsage] = field(default_factory=list)
    convention: str = SISNR_CONVENTION

    def collapsed(self) -> list[int]:
        """Codebooks whose code perplexity is below COLLAPSE_SHARE of their bins."""
        return [u.codebook for u in self.codebooks if u.perplexity < COLLAPSE_SHARE * u.bins]

    @property
    def mean(self) -> dict[str, float]:
        if not self.clips:
            return {}
        return {m: float(np.mean([getattr(c, m) for c in self.clips])) for m in METRICS}

    def to_dict(self) -> dict[str, Any]:
        return {
            "sample_rate": self.sample_rate,
            "bandwidth_kbps": self.bandwidth_kbps,
            "n_q": self.n_q,
            "convention": self.convention,
            "mean": self.mean,
            "codebooks": [asdict(u) for u in self.codebooks],
            "clips": [asdict(c) for c in self.clips],
        }


def select_clips(
    dataset_dir: str | Path,
    num_samples: int,
    sample_rate: int,
    channels: int,
    split: str = "valid",
    max_seconds: float = 10.0,
) -> list[Clip]:
    """``num_samples`` segments spread evenly over ``split`` (train when there is no valid split), at
    ``sample_rate`` Hz and ``channels``, cut to ``max_seconds``. Unreadable files are logged and skipped."""
    from tunesmith.audio.io import load_audio
    from tunesmith.data.manifest import manifest_path, read_manifest, resolve_path, spread_indices

    if split == "valid" and not manifest_path(dataset_dir, "valid").is_file():
        split = "train"
    entries = read_manifest(dataset_dir, split)
    if not entries:
        raise UserError(f"{manifest_path(dataset_dir, split)}: no segments to check")
    picks = spread_indices(len(entries), num_samples)
    clips: list[Clip] = []
    limit = int(max_seconds * sample_rate)
    for index in picks:
        path = resolve_path(dataset_dir, entries[index])
        try:
            wav, _ = load_audio(path, sample_rate=sample_rate, channels=channels)
        except UserError as err:
            log.warning("skipping %s: %s", path, err)
            continue
        clips.append(Clip(f"{split}{index:05d}_{path.stem}", wav[:, :limit]))
    if not clips:
        raise UserError(f"{dataset_dir}: none of the selected {split} segments could be read")
    return clips


def check_codec(codec: Any, clips: list[Clip], out_dir: str | Path | None = None, device: str = "cpu") -> CheckReport:
    """Round-trip every clip through ``codec`` (one at a time, no padding) and measure it.

    With ``out_dir``, writes the original/reconstructed wav pairs and report.json / report.md there.
    """
    import torch

    from tunesmith.audio.metrics import reconstruction_metrics

    bandwidth = getattr(codec, "bandwidth", None)
    report = CheckReport(int(codec.sample_rate), float(bandwidth) if bandwidth is not None else None, int(codec.n_q))
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    bins = getattr(codec, "bins", None)
    counts: np.ndarray | None = None
    for number, clip in enumerate(clips):
        ref = torch.from_numpy(np.ascontiguousarray(clip.wav, dtype=np.float32)).unsqueeze(0).to(device)
        with torch.no_grad():
            codes = codec.encode(ref)
            est = codec.decode(codes)[..., : ref.shape[-1]].float()
        if bins is not None:  # codes [1, K, F]
            per_codebook = np.stack([np.bincount(row, minlength=int(bins)) for row in codes[0].cpu().numpy()])
            counts = per_codebook if counts is None else counts + per_codebook
        if est.shape[-1] < ref.shape[-1]:
            est = torch.nn.functional.pad(est, (0, ref.shape[-1] - est.shape[-1]))
        values = {k: float(v[0]) for k, v in reconstruction_metrics(ref.cpu(), est.cpu(), codec.sample_rate).items()}
        result = ClipResult(clip.name, ref.shape[-1] / codec.sample_rate, **values)
        if out is not None:
            from tunesmith.audio.io import save_audio

            stem = f"{number:03d}_{clip.name}"
            result.original, result.reconstructed = f"{stem}.original.wav", f"{stem}.reconstructed.wav"
            save_audio(out / result.original, clip.wav, codec.sample_rate)
            save_audio(out / result.reconstructed, est[0].cpu().numpy(), codec.sample_rate)
        report.clips.append(result)
    if counts is not None:
        report.codebooks = codebook_usage(counts)
    if out is not None:
        from tunesmith.fileio import atomic_write_text

        atomic_write_text(out / "report.json", json.dumps(report.to_dict(), indent=2) + "\n")
        atomic_write_text(out / "report.md", report_markdown(report))
    return report


def clip_set_text(names: list[str], seconds: list[float]) -> str:
    """What a check measured on, e.g. ``"4 valid clips, 13.2 s in all (the longest 4.0 s)"``: code perplexity and
    the means depend on it, so every figure names it. The split is read from the clip names (``valid00012_x``)."""
    splits = sorted({m.group(1) for n in names if (m := re.match(r"^([A-Za-z]+)\d{5}_", n))})
    kind = f"{'/'.join(splits)} " if splits else ""
    total, longest = sum(seconds), max(seconds, default=0.0)
    return (
        f"{len(names)} {kind}clip{'s' if len(names) != 1 else ''}, {total:.1f} s in all (the longest {longest:.1f} s)"
    )


def report_markdown(report: CheckReport) -> str:
    bw = f"{report.bandwidth_kbps:g} kbps" if report.bandwidth_kbps is not None else "?"
    lines = [
        f"# Codec check ({report.sample_rate} Hz, {bw}, {report.n_q} codebooks)",
        "",
        f"{report.convention}. mel: mean |log10 mel| difference (lower is better).",
        "",
        f"Measured on {clip_set_text([c.name for c in report.clips], [c.seconds for c in report.clips])}.",
        "",
        "| clip | seconds | SI-SNR (dB) | mel | L1 | MSE | original | reconstructed |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in report.clips:
        lines.append(
            f"| {c.name} | {c.seconds:.2f} | {c.sisnr:.2f} | {c.mel:.4f} | {c.l1:.5f} | {c.mse:.6f} | "
            f"{c.original or ''} | {c.reconstructed or ''} |"
        )
    m = report.mean
    if m:
        lines.append(f"| **mean** | | {m['sisnr']:.2f} | {m['mel']:.4f} | {m['l1']:.5f} | {m['mse']:.6f} | | |")
    if report.codebooks:
        lines += ["", "| codebook | codes used | code perplexity |", "| --- | --- | --- |"]
        lines += [f"| {u.codebook} | {u.used} / {u.bins} | {u.perplexity:.1f} |" for u in report.codebooks]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- a codec run or model dir


def default_data(codec_path: Path) -> Path | None:
    """The dataset a codec run trained on (its config's ``data``), or None."""
    from tunesmith.artifacts import checkpoint as ckpt

    try:
        config = ckpt.read_config(ckpt.find_checkpoint(codec_path))
    except UserError:
        return None
    data = config.get("config", config).get("data") if isinstance(config, dict) else None
    return Path(data) if data else None


def default_out(codec_ref: str | Path, bandwidth: float | None) -> Path:
    """``RUN/check/bw<kbps>`` for a run folder, else ``codec-check/check/...``."""
    base = Path(codec_ref) if (Path(codec_ref) / "checkpoints").is_dir() else Path("codec-check")
    return base / "check" / (f"bw{bandwidth:g}" if bandwidth is not None else "default")


def check_codec_path(
    codec_ref: str | Path,
    *,
    data: str | Path | None = None,
    split: str = "valid",
    num_samples: int = CHECK_NUM_SAMPLES,
    max_seconds: float = CHECK_MAX_SECONDS,
    bandwidth: float | None = None,
    out: str | Path | None = None,
    device: str = "cpu",
) -> tuple[CheckReport, Path]:
    """Load a codec (run, checkpoint or model dir), check it on ``num_samples`` clips → (report, output folder)."""
    from tunesmith.models.codec import load_codec

    if num_samples < 1:
        raise UserError(f"--num-samples must be at least 1, got {num_samples}")
    codec = load_codec(codec_ref, bandwidth=bandwidth, device=device)
    data = data or default_data(Path(codec_ref))
    if data is None:
        raise UserError(f"{codec_ref}: no dataset recorded with this codec; pass --data DIR (a prepared dataset)")
    if not Path(data).is_dir():
        raise UserError(f"{data}: dataset folder not found; pass --data DIR (a prepared dataset)")
    clips = select_clips(data, num_samples, codec.sample_rate, codec.channels, split, max_seconds)
    folder = Path(out) if out is not None else default_out(codec_ref, getattr(codec, "bandwidth", None))
    return check_codec(codec, clips, folder, device=device), folder
