"""Free-running evaluation of piano tasks: generate each record's target as ``generate-midi`` does and
score the generated notes, next to constant baselines on the same records.

A record (:class:`~tunesmith.models.midi.tasks.TaskRecord`) is split into its prompt (the tokens before
the first target) and its target (the target tokens without the closing EOS). The model then produces
the target with :func:`~tunesmith.models.midi.generation.generate_target` (greedy, and optionally
sampled with a fixed seed per record) and the result is compared with the truth:

- velocity tasks (``velocity``, ``velocity_denoise``): one predicted velocity per note, in the
  tokenizer's note order (written into the target's layout: its note tokens given), against the target's
  velocity (the bin value of the true velocity token):
  mean absolute error and Pearson correlation over all notes of the split. Baselines: the mean
  velocity of the training split for every note (``baseline_mean``) and, for denoising, the noisy
  input velocities themselves (``baseline_copy``).
- partition tasks (``loud_from_soft`` …): note-level precision, recall and F1 of the generated notes
  against the target notes (same pitch, onsets within ``onset_tolerance`` seconds, each note matched
  at most once), the ratio of generated to target notes, and the malformed note groups the decoder
  repaired (0 under the grammar). Baseline: the prompt's own notes as the answer (``baseline_copy``).
- note-denoising tasks (``pitch_denoise``, ``time_denoise``): the same note-level scores of the generated
  (clean) notes against the true notes, with the noisy input notes as the copy baseline; a constant
  answer scores ~0 there, so copying is the baseline that matters. ``pitch_denoise`` also reports
  ``pitch_accuracy``: the share of true notes given back with the right pitch at their onset (within
  ``onset_tolerance``: the note recall). ``time_denoise`` also reports ``onset_mae`` (s): the mean
  absolute onset error over a one-to-one matching of generated to true notes of the same pitch within
  ``onset_window`` seconds, and ``onset_matched``, the share of true notes in that matching.

Statistics are kept as sums (:class:`FreeRunStats`) so that shards of records evaluated on different
ranks add up before :func:`summarize` turns them into metrics.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from tunesmith.models.midi.generation import SamplingConfig, generate_target, velocity_values
from tunesmith.models.midi.gpt import MidiGPT
from tunesmith.models.midi.notes import Notes
from tunesmith.models.midi.tasks import NOTE_DENOISE_TASKS, PARTITION_TASKS, VELOCITY_TASKS, TaskRecord
from tunesmith.models.midi.tokenizer import VELOCITY, MidiTokenizer

VELOCITY_STATS = ("n", "abs", "sp", "st", "spp", "stt", "spt")
NOTE_STATS = ("tp", "n_pred", "n_ref", "repairs")
ONSET_STATS = ("on_n", "on_abs")  # time_denoise: matched notes, summed |onset error| (s)


@dataclasses.dataclass
class TaskEvalConfig:
    """The ``task_eval:`` section of a midi config (free-running evaluation of piano tasks)."""

    enabled: bool = True
    max_records: int = 32  # per eval split and task, spread evenly over the split (0 = every record)
    sampled: bool = False  # also generate with sampling (seeded per record) and report sampled_* metrics
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 0.95
    seed: int = 0
    onset_tolerance: float = 0.05  # s: a generated note matches a target note of the same pitch this close
    onset_window: float = 0.25  # s: time_denoise's onset_mae pairs notes of the same pitch this close
    guidance: float = 1.0  # classifier-free guidance of the generation (a conditioned run; 1 = none)


def modes(cfg: TaskEvalConfig) -> tuple[str, ...]:
    return ("greedy", "sampled") if cfg.sampled else ("greedy",)


def stat_keys(tasks: list[str], cfg: TaskEvalConfig) -> list[str]:
    """The fixed, ordered names of the sums kept for ``tasks`` (the same on every rank)."""
    keys = []
    for task in tasks:
        if task in VELOCITY_TASKS:
            for mode in modes(cfg):
                keys += [f"{task}/{mode}/{s}" for s in VELOCITY_STATS]
            keys += [f"{task}/baseline_mean/abs"]
            if task == "velocity_denoise":
                keys += [f"{task}/baseline_copy/abs"]
        elif task in PARTITION_TASKS or task in NOTE_DENOISE_TASKS:
            for mode in modes(cfg):
                keys += [f"{task}/{mode}/{s}" for s in NOTE_STATS]
            keys += [f"{task}/baseline_copy/tp", f"{task}/baseline_copy/n_pred"]
            if task == "time_denoise":
                for mode in (*modes(cfg), "baseline_copy"):
                    keys += [f"{task}/{mode}/{s}" for s in ONSET_STATS]
        else:
            raise ValueError(f"no free-running evaluation for task {task!r}")
        keys.append(f"{task}/records")
    return keys


def record_parts(record: TaskRecord) -> tuple[np.ndarray, np.ndarray]:
    """(prompt ``[P]``, target ``[N]``) of a record: its first ``prompt_len`` tokens, and the rest without
    the closing EOS (a velocity task's target in its layout: the velocities, with the notes when interleaved)."""
    if not record.target_mask.any():
        raise ValueError("record has no target tokens")
    return record.tokens[: record.prompt_len], record.tokens[record.prompt_len : -1]


def note_matches(pred: Notes, ref: Notes, tolerance: float) -> int:
    """Size of the largest one-to-one matching of ``pred`` to ``ref`` notes with equal pitch and onsets at
    most ``tolerance`` seconds apart (per pitch, a two-pointer sweep over sorted onsets is optimal)."""
    return len(onset_errors(pred, ref, tolerance))


def onset_errors(pred: Notes, ref: Notes, window: float) -> np.ndarray:
    """``|onset difference|`` (s) of each pair of the two-pointer matching of :func:`note_matches`
    (per pitch, sorted onsets paired in order when at most ``window`` apart): float64 ``[matches]``."""
    errors: list[float] = []
    for pitch in np.intersect1d(pred.pitch, ref.pitch):
        a = np.sort(pred.start[pred.pitch == pitch])
        b = np.sort(ref.start[ref.pitch == pitch])
        i = j = 0
        while i < len(a) and j < len(b):
            if abs(a[i] - b[j]) <= window + 1e-9:
                errors.append(abs(float(a[i] - b[j])))
                i += 1
                j += 1
            elif a[i] < b[j]:
                i += 1
            else:
                j += 1
    return np.asarray(errors, np.float64)


class FreeRunStats:
    """Sums of the free-running statistics of some records (see the module docstring)."""

    def __init__(
        self,
        tok: MidiTokenizer,
        tasks: list[str],
        cfg: TaskEvalConfig,
        train_mean_velocity: float,
        uncond_prefix: np.ndarray | None = None,
    ) -> None:
        """``uncond_prefix``: the conditioning prefix with every field dropped (records start with a prefix of
        that length), needed for ``cfg.guidance`` != 1."""
        if cfg.guidance != 1.0 and uncond_prefix is None:
            raise ValueError("task_eval.guidance != 1 needs a conditioned model (its unconditional prefix)")
        self.tok, self.tasks, self.cfg = tok, list(tasks), cfg
        self.uncond_prefix = None if uncond_prefix is None else np.asarray(uncond_prefix, np.int64)
        self.mean_velocity = float(train_mean_velocity)
        self.keys = stat_keys(self.tasks, cfg)
        self.sums = dict.fromkeys(self.keys, 0.0)
        self._values = velocity_values(tok).astype(np.float64)

    def sampling(self, mode: str, record_seed: int) -> SamplingConfig:
        c = self.cfg
        if mode == "greedy":
            return SamplingConfig(temperature=0.0, seed=0, guidance=c.guidance)
        return SamplingConfig(c.temperature, c.top_k, c.top_p, c.seed * 1_000_003 + int(record_seed), c.guidance)

    def unconditional(self, prompt: np.ndarray) -> np.ndarray | None:
        """``prompt`` with its conditioning prefix dropped, when guidance is on (else None)."""
        if self.cfg.guidance == 1.0 or self.uncond_prefix is None:
            return None
        return np.concatenate([self.uncond_prefix, prompt[len(self.uncond_prefix) :]])

    def add(self, model: MidiGPT, record: TaskRecord, record_seed: int) -> None:
        """Generate ``record``'s target (each mode) and add its statistics; ``record_seed`` fixes sampling."""
        task = record.task
        prompt, target = record_parts(record)
        uncond = self.unconditional(prompt)
        s = self.sums
        s[f"{task}/records"] += 1
        if task in VELOCITY_TASKS:
            truth = self._values[target[self.tok.types_of(target) == VELOCITY]]
            for mode in modes(self.cfg):
                predicted = generate_target(
                    model, self.tok, task, prompt, self.sampling(mode, record_seed), frame=target, uncond_prompt=uncond
                )
                self._add_velocity(f"{task}/{mode}", self._values[predicted], truth)
            s[f"{task}/baseline_mean/abs"] += float(np.abs(self.mean_velocity - truth).sum())
            if task == "velocity_denoise":
                noisy = self._values[prompt[self.tok.types_of(prompt) == VELOCITY]]
                s[f"{task}/baseline_copy/abs"] += float(np.abs(noisy - truth).sum())
            return
        ref = self.tok.decode(target)
        source = self.tok.decode(prompt)  # specials are skipped: the source notes
        for mode in modes(self.cfg):
            generated = generate_target(
                model, self.tok, task, prompt, self.sampling(mode, record_seed), uncond_prompt=uncond
            )
            notes, repairs = self.tok.decode_with_report(generated)
            s[f"{task}/{mode}/tp"] += note_matches(notes, ref, self.cfg.onset_tolerance)
            s[f"{task}/{mode}/n_pred"] += len(notes)
            s[f"{task}/{mode}/n_ref"] += len(ref)
            s[f"{task}/{mode}/repairs"] += repairs
            if task == "time_denoise":
                self._add_onsets(f"{task}/{mode}", notes, ref)
        s[f"{task}/baseline_copy/tp"] += note_matches(source, ref, self.cfg.onset_tolerance)
        s[f"{task}/baseline_copy/n_pred"] += len(source)
        if task == "time_denoise":
            self._add_onsets(f"{task}/baseline_copy", source, ref)

    def _add_onsets(self, prefix: str, pred: Notes, ref: Notes) -> None:
        errors = onset_errors(pred, ref, self.cfg.onset_window)
        self.sums[f"{prefix}/on_n"] += len(errors)
        self.sums[f"{prefix}/on_abs"] += float(errors.sum())

    def _add_velocity(self, prefix: str, p: np.ndarray, t: np.ndarray) -> None:
        s = self.sums
        s[f"{prefix}/n"] += len(t)
        s[f"{prefix}/abs"] += float(np.abs(p - t).sum())
        s[f"{prefix}/sp"] += float(p.sum())
        s[f"{prefix}/st"] += float(t.sum())
        s[f"{prefix}/spp"] += float((p * p).sum())
        s[f"{prefix}/stt"] += float((t * t).sum())
        s[f"{prefix}/spt"] += float((p * t).sum())

    def vector(self) -> list[float]:
        return [self.sums[k] for k in self.keys]

    def load_vector(self, values: list[float]) -> None:
        self.sums = dict(zip(self.keys, (float(v) for v in values), strict=True))


def pearson(n: float, sp: float, st: float, spp: float, stt: float, spt: float) -> float:
    """Pearson correlation from sums; 0.0 when either side is constant (no linear relation to measure)."""
    if n < 2:
        return 0.0
    cov = spt - sp * st / n
    vp, vt = spp - sp * sp / n, stt - st * st / n
    if vp <= 1e-9 * max(spp, 1.0) or vt <= 1e-9 * max(stt, 1.0):
        return 0.0
    return float(cov / math.sqrt(vp * vt))


def f1(tp: float, n_pred: float, n_ref: float) -> tuple[float, float, float]:
    """(precision, recall, F1); an empty side counts as 1.0 when the other is empty too, else 0.0."""
    precision = tp / n_pred if n_pred else float(n_ref == 0)
    recall = tp / n_ref if n_ref else float(n_pred == 0)
    score = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, score


def summarize(sums: dict[str, float], tasks: list[str], cfg: TaskEvalConfig) -> dict[str, float]:
    """Metrics ``{task}/{name}`` from the summed statistics (free-running greedy unless prefixed
    ``sampled_``; ``baseline_*`` are the constant baselines on the same notes)."""
    out: dict[str, float] = {}
    for task in tasks:
        if not sums.get(f"{task}/records"):
            continue
        out[f"{task}/records"] = sums[f"{task}/records"]
        if task in VELOCITY_TASKS:
            n = sums[f"{task}/greedy/n"]
            if not n:
                continue
            for mode in modes(cfg):
                prefix = "" if mode == "greedy" else "sampled_"
                g = [sums[f"{task}/{mode}/{k}"] for k in VELOCITY_STATS]
                out[f"{task}/{prefix}velocity_mae"] = g[1] / g[0]
                out[f"{task}/{prefix}velocity_corr"] = pearson(g[0], *g[2:])
            out[f"{task}/baseline_mean_velocity_mae"] = sums[f"{task}/baseline_mean/abs"] / n
            if task == "velocity_denoise":
                out[f"{task}/baseline_copy_velocity_mae"] = sums[f"{task}/baseline_copy/abs"] / n
            out[f"{task}/notes"] = n
        else:
            for mode in modes(cfg):
                prefix = "" if mode == "greedy" else "sampled_"
                tp, n_pred, n_ref = (sums[f"{task}/{mode}/{k}"] for k in ("tp", "n_pred", "n_ref"))
                precision, recall, score = f1(tp, n_pred, n_ref)
                out[f"{task}/{prefix}note_f1"] = score
                out[f"{task}/{prefix}note_precision"] = precision
                out[f"{task}/{prefix}note_recall"] = recall
                out[f"{task}/{prefix}note_count_ratio"] = n_pred / n_ref if n_ref else 0.0
                out[f"{task}/{prefix}repairs"] = sums[f"{task}/{mode}/repairs"]
                if task == "pitch_denoise":
                    out[f"{task}/{prefix}pitch_accuracy"] = recall
                if task == "time_denoise":
                    _onset_metrics(out, sums, task, mode, prefix, n_ref, cfg.onset_window)
            n_ref = sums[f"{task}/greedy/n_ref"]
            out[f"{task}/baseline_copy_note_f1"] = f1(
                sums[f"{task}/baseline_copy/tp"], sums[f"{task}/baseline_copy/n_pred"], n_ref
            )[2]
            if task == "pitch_denoise":
                out[f"{task}/baseline_copy_pitch_accuracy"] = sums[f"{task}/baseline_copy/tp"] / n_ref if n_ref else 0.0
            if task == "time_denoise":
                _onset_metrics(out, sums, task, "baseline_copy", "baseline_copy_", n_ref, cfg.onset_window)
    return out


def _onset_metrics(
    out: dict[str, float], sums: dict[str, float], task: str, mode: str, prefix: str, n_ref: float, window: float
) -> None:
    """``onset_mae`` (s, over matched notes; ``window`` when none matched) and ``onset_matched``."""
    matched = sums[f"{task}/{mode}/on_n"]
    out[f"{task}/{prefix}onset_mae"] = sums[f"{task}/{mode}/on_abs"] / matched if matched else window
    out[f"{task}/{prefix}onset_matched"] = matched / n_ref if n_ref else 0.0


def evenly_spaced(indices: list[int], limit: int) -> list[int]:
    """At most ``limit`` of ``indices`` spread evenly from first to last (``limit`` 0: all of them)."""
    if limit <= 0 or len(indices) <= limit:
        return list(indices)
    picks = np.unique(np.round(np.linspace(0, len(indices) - 1, limit)).astype(np.int64))
    return [indices[int(i)] for i in picks]
