"""The MIDI solver: next-token pretraining of a piano GPT, then piano-task fine-tuning.

    tunesmith train midi tiny data=DIR stage=pretrain
    tunesmith train midi tiny data=DIR stage=piano_task init_from=RUN

``stage=pretrain`` trains on windows of ``dataset.context_size`` tokens of the token stream (a token
count, not seconds: MIDI has no audio crop length, so ``dataset.segment_seconds`` and the curriculum do
not apply);
``stage=piano_task`` on piano-task records (loss on target tokens only). The engine normalises the
summed loss by the number of target tokens across accumulation and ranks. Evaluation covers the
full validation split and every named split in ``eval_splits`` (metadata filters, e.g.
``composer~Chopin``) with fixed windows/records, reporting the loss per token type and, for
velocity tasks, the velocity MAE. Checkpoints carry the tokenizer description (``extra.tokenizer_desc``).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import ClassVar, Literal

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from tunesmith.config import OptimConfig, Range, TrainConfig, ranged, to_dict
from tunesmith.engine.solver import LossOutput, Solver
from tunesmith.engine.state import StateRegistry
from tunesmith.errors import UserError
from tunesmith.models.midi.augment import MidiAugmentConfig
from tunesmith.models.midi.conditioning import Conditioner
from tunesmith.models.midi.gpt import MidiGPT, MidiGPTConfig
from tunesmith.models.midi.task_eval import TaskEvalConfig
from tunesmith.models.midi.tasks import VELOCITY_TASKS, PianoTaskConfig, check_task_config
from tunesmith.models.midi.tokenizer import MidiTokenizer, MidiTokenizerConfig, build_tokenizer
from tunesmith.tasks.midi_metrics import (
    eval_split_ids,
    free_running_metrics,
    lm_loss,
    split_summary_lines,
    teacher_forced_metrics,
)

log = logging.getLogger("tunesmith.midi")

# model keys that may differ between a pretrained run and its fine-tuning (the rest fixes the weights' shapes)
FREE_MODEL_KEYS = ("dropout",)


@dataclasses.dataclass
class MidiDatasetConfig:
    """``context_size`` is a number of tokens (not seconds, unlike the audio tasks' ``segment_seconds``)."""

    batch_size: int = ranged(8, ge=1)
    context_size: int = ranged(256, ge=2)  # pretrain: tokens per training window (<= model.max_seq_len)
    augment: MidiAugmentConfig = dataclasses.field(default_factory=MidiAugmentConfig)  # training items only
    condition_dropout: float = ranged(0.1, ge=0, le=1)  # tokenizer.conditioning: P(a prefix token → unknown)
    eval_base_split: str = "valid"  # named eval splits select from this split unless their filter sets
    # split= ("all": from every split)


@dataclasses.dataclass
class MidiGenerateConfig:
    """Samples written at the generate stage (runs/<...>/samples/epoch_N/)."""

    num_samples: int = ranged(2, ge=0)
    tokens: int = ranged(256, ge=1)  # new tokens per continuation
    prompt_tokens: int = ranged(64, ge=1)  # tokens of a validation piece used as the prompt
    temperature: float = ranged(1.0, ge=0)
    top_k: int = ranged(0, ge=0)
    top_p: float = ranged(0.95, ge=0, le=1)
    render_wav: bool = False  # also render .wav with fluidsynth when it is installed
    guidance: float = ranged(1.0, ge=0)  # classifier-free guidance scale for a conditioned model (1 = none)


@dataclasses.dataclass
class MidiConfig:
    data: str = ""  # a folder written by `tunesmith prepare-midi`
    stage: Literal["pretrain", "piano_task"] = "pretrain"
    init_from: str = ""  # run / checkpoint / model dir whose weights start this run (piano_task)
    tokenizer: MidiTokenizerConfig = dataclasses.field(default_factory=MidiTokenizerConfig)
    model: MidiGPTConfig = dataclasses.field(default_factory=MidiGPTConfig)
    dataset: MidiDatasetConfig = dataclasses.field(default_factory=MidiDatasetConfig)
    piano_task: PianoTaskConfig = dataclasses.field(default_factory=PianoTaskConfig)
    eval_splits: dict[str, str] = dataclasses.field(default_factory=dict)  # name → metadata filter
    generate: MidiGenerateConfig = dataclasses.field(default_factory=MidiGenerateConfig)
    task_eval: TaskEvalConfig = dataclasses.field(default_factory=TaskEvalConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)

    value_ranges: ClassVar[dict[str, Range]] = {  # sections defined in models.midi
        "model.dim": Range(ge=1),
        "model.num_layers": Range(ge=1),
        "model.num_heads": Range(ge=1),
        "model.ffn_dim": Range(ge=0),
        "model.dropout": Range(ge=0, lt=1),
        "model.max_seq_len": Range(ge=2),
        "tokenizer.time_step": Range(gt=0),
        "tokenizer.max_time_shift": Range(gt=0),
        "tokenizer.max_duration": Range(gt=0),
        "tokenizer.duration_bins": Range(ge=1),
        "tokenizer.velocity_bins": Range(ge=1, le=127),
        "tokenizer.pitch_min": Range(ge=0, le=127),
        "tokenizer.pitch_max": Range(ge=0, le=127),
        "tokenizer.bpe_vocab_size": Range(ge=0),
        "piano_task.notes_per_record": Range(ge=2),
        "piano_task.noise_std": Range(ge=0),
        "piano_task.pitch_noise": Range(ge=1, le=24),
        "piano_task.pitch_noise_fraction": Range(ge=0, le=1),
        "piano_task.time_noise_std": Range(ge=0),
        "piano_task.min_notes": Range(ge=1),
        "dataset.augment.pitch_shift": Range(ge=0, le=48),
        "dataset.augment.tempo_stretch": Range(ge=0, le=1),
        "task_eval.max_records": Range(ge=0),
        "task_eval.temperature": Range(ge=0),
        "task_eval.top_k": Range(ge=0),
        "task_eval.top_p": Range(ge=0, le=1),
        "task_eval.onset_tolerance": Range(ge=0),
        "task_eval.onset_window": Range(ge=0),
        "task_eval.guidance": Range(ge=0),
    }


class MidiSolver(Solver):
    task = "midi"
    config_class = MidiConfig
    best_metric = "loss"
    best_mode = "min"
    target_unit = "tokens"

    def __init__(self, resolved, run) -> None:
        super().__init__(resolved, run)
        self.tokenizer: MidiTokenizer = build_tokenizer(self.cfg.tokenizer)
        t = self.cfg.tokenizer
        self.conditioner = Conditioner.from_config(self.tokenizer, t)
        if self.cfg.stage == "piano_task":
            check_task_config(self.cfg.piano_task)
        self._store = None
        self._eval_sets: dict[str, Dataset] | None = None
        self._flops: float | None = None
        self._mean_velocity: float | None = None
        self._tokens_seen = 0  # this rank's training input tokens since the start (or since resume, rank > 0)

    def prepare(self) -> None:
        """``tokenizer.bpe_vocab_size > 0``: the learned BPE tokenizer replaces the base one before the model
        is built (learned on the train split or taken from init_from; :mod:`tunesmith.tasks.midi_bpe`)."""
        t = self.cfg.tokenizer
        if t.bpe_vocab_size:
            from tunesmith.tasks.midi_bpe import check_bpe_tasks, run_tokenizer

            check_bpe_tasks(self.cfg.stage, self.cfg.piano_task.tasks, t.bpe_vocab_size)
            self.tokenizer = run_tokenizer(
                self.tokenizer,
                t.bpe_vocab_size,
                store=self.store,
                run_dir=self.run.dir,
                init_from=self.cfg.init_from,
                is_main=self.dist.is_main,
            )
            self.conditioner = Conditioner.from_config(self.tokenizer, t)
        return None

    # ------------------------------------------------------------------ data

    @property
    def store(self):
        from tunesmith.data.midi_prepare import MidiNotesStore

        if self._store is None:
            if not self.cfg.data:
                raise UserError("no dataset: pass data=DIR (a folder written by `tunesmith prepare-midi`)")
            self._store = MidiNotesStore(self.cfg.data)
        return self._store

    def data_fingerprint(self) -> dict | None:
        """The prepared store: summary, piece list and note arrays (see engine.data_identity)."""
        from tunesmith.data.midi_prepare import store_fingerprint

        return store_fingerprint(self.store.root)  # the store first: a missing folder gets its clear error

    def _dataset(self, piece_ids: list[int], *, train: bool) -> Dataset:
        from tunesmith.data.datasets.midi import (
            AugmentedWindows,
            ConditionedWindows,
            PianoTaskRecords,
            TokenWindows,
            token_stream,
            token_stream_with_offsets,
        )

        tok, aug, d = self.tokenizer, self.cfg.dataset.augment, self.cfg.dataset
        cond = self.conditioner if len(self.conditioner) else None
        if self.cfg.stage == "pretrain":
            if train and aug.enabled:
                counts = [len(tok.encode(self.store.notes(i))) + 2 for i in piece_ids]
                return AugmentedWindows(
                    self.store,
                    piece_ids,
                    tok,
                    d.context_size,
                    aug,
                    stream_tokens=counts,
                    conditioner=cond,
                    condition_dropout=d.condition_dropout,
                )
            if cond is not None:
                stream, offsets = token_stream_with_offsets(self.store, piece_ids, tok)
                prefixes = [cond.piece_prefix(self.store.pieces[i]) for i in piece_ids]
                return ConditionedWindows(
                    stream,
                    offsets,
                    prefixes,
                    cond,
                    d.context_size,
                    random_crop=train,
                    pad_id=tok.pad_id,
                    dropout=d.condition_dropout,
                )
            stream = token_stream(self.store, piece_ids, tok)
            return TokenWindows(stream, d.context_size, random_crop=train, pad_id=tok.pad_id)
        return PianoTaskRecords(
            self.store,
            piece_ids,
            tok,
            self.cfg.piano_task,
            self.cfg.model.max_seq_len,
            train=train,
            augment=aug,
            conditioner=cond,
            condition_dropout=d.condition_dropout,
        )

    def build_datasets(self) -> dict[str, Dataset]:
        self._check_settings()
        datasets = {"train": self._dataset(self.store.select("train"), train=True)}
        valid_ids = self.store.select("valid")
        if valid_ids:
            datasets["valid"] = self._dataset(valid_ids, train=False)
        else:
            log.warning("%s has no valid split: no validation loss, no best checkpoint", self.cfg.data)
        return datasets

    def eval_sets(self) -> dict[str, Dataset]:
        """ "valid" (the whole split) and each named split of ``eval_splits``; empty ones are skipped (logged)."""
        if self._eval_sets is None:
            sets: dict[str, Dataset] = {}
            splits = eval_split_ids(self.store, self.cfg.eval_splits, self.cfg.dataset.eval_base_split, log=log)
            for name, ids in splits.items():
                if name == "valid" and "valid" in self.datasets:
                    sets["valid"] = self.datasets["valid"]
                else:
                    sets[name] = self._dataset(ids, train=False)
            self._eval_sets = sets
        return self._eval_sets

    def _check_settings(self) -> None:
        d, m, t = self.cfg.dataset, self.cfg.model, self.cfg.tokenizer
        if "valid" in self.cfg.eval_splits:
            raise UserError("eval_splits.valid: the name 'valid' is taken by the whole validation split; rename it")
        for key in ("generate", "task_eval"):
            if getattr(self.cfg, key).guidance != 1.0 and not len(self.conditioner):
                raise UserError(
                    f"{key}.guidance needs a conditioned model (tokenizer.conditioning=[...]); leave it at 1"
                )
        if self.cfg.stage == "pretrain" and d.context_size > m.max_seq_len:
            raise UserError(
                f"dataset.context_size={d.context_size} is longer than model.max_seq_len={m.max_seq_len}; "
                f"lower context_size or raise max_seq_len (for a new model)"
            )
        sustain = self.store.summary.get("sustain")
        if t.pedal_tokens and sustain != "events":
            log.warning(
                "tokenizer.pedal_tokens=true but %s was prepared with --sustain %s: pedal tokens %s",
                self.cfg.data,
                sustain,
                "repeat what the lengthened notes already say" if sustain == "apply" else "will be absent",
            )
        from tunesmith.data.midi_prepare import parse_filter

        for name, where in self.cfg.eval_splits.items():
            parse_filter(where, field_name=f"eval_splits.{name}")

    # ------------------------------------------------------------------ model

    def build_model(self) -> nn.Module:
        if self.cfg.init_from:
            self._check_init_source(self.cfg.init_from)
        elif self.cfg.stage == "piano_task":
            log.warning("stage=piano_task without init_from=RUN: the task is learnt from random weights")
        return MidiGPT(self.cfg.model, self.tokenizer.vocab_size)

    def _check_init_source(self, source: str) -> None:
        """The run we start from must have the same tokenizer and model shape."""
        from tunesmith.artifacts import checkpoint as ckpt
        from tunesmith.config import diff, flatten

        folder = ckpt.find_checkpoint(source, which="best")
        stored = ckpt.read_config(folder).get("config") or {}
        mine = self.resolved.data
        problems = []
        for section in ("tokenizer", "model"):
            if section not in stored:
                problems.append(f"{section} (not in {folder}/config.json: not a midi run?)")
                continue
            added = flatten(to_dict(getattr(MidiConfig(), section)))  # keys newer than the source: their defaults
            for key, (theirs, ours) in diff(stored[section], mine[section]).items():
                if section == "model" and key in FREE_MODEL_KEYS:
                    continue
                if key not in flatten(stored[section]) and key in added and ours == added[key]:
                    continue
                problems.append(f"{section}.{key}: {theirs!r} there, {ours!r} here")
        if problems:
            raise UserError(
                f"init_from={source}: the source differs in settings that fix the weights: "
                + "; ".join(problems)
                + ". Use the preset it was trained with (and the same overrides)."
            )

    def collate(self, items: list) -> dict[str, torch.Tensor]:
        from tunesmith.data.datasets.midi import collate

        return collate(items, self.tokenizer.pad_id)

    def count_targets(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["mask"].sum())

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> LossOutput:
        if model.training:
            self._tokens_seen += int((batch["tokens"][:, :-1] != self.tokenizer.pad_id).sum())
        loss_sum, _, logits = lm_loss(model, batch["tokens"], batch["mask"])
        labels = batch["tokens"][:, 1:][batch["mask"]]
        correct = (logits.detach().argmax(-1) == labels).sum()
        return LossOutput(loss_sum, {"accuracy": correct.float()})

    def flops_per_target(self) -> float | None:
        """FLOPs per target token: exact for pretraining; for piano tasks averaged over the first
        validation (else training) records, the LM head counted on target positions only."""
        if self._flops is None:
            model: MidiGPT = self.model
            if self.cfg.stage == "pretrain":
                self._flops = model.flops_per_token(self.cfg.dataset.context_size)
            else:
                dataset = self.datasets.get("valid") or self.datasets["train"]
                n = min(len(dataset), 32)
                lengths = [len(dataset[(i, 0)]["tokens"]) - 1 for i in range(n)]
                targets = [int(dataset[(i, 0)]["mask"].sum()) for i in range(n)]
                head = model.head.weight.numel()
                body = model.num_params(non_embedding=True) - head
                per_record = [
                    6.0 * body * t + 6.0 * head * m + 12.0 * model.cfg.num_layers * model.cfg.dim * t * t
                    for t, m in zip(lengths, targets, strict=True)
                ]
                self._flops = sum(per_record) / max(sum(targets), 1)
        return self._flops

    # ------------------------------------------------------------------ evaluate

    @torch.no_grad()
    def evaluate(self, model: nn.Module, epoch: int) -> dict[str, float]:
        """Per eval split: teacher-forced loss, loss per token type, accuracy and (velocity tasks)
        ``tf_velocity_mae``; for piano tasks also the free-running task metrics and their baselines
        (:mod:`tunesmith.models.midi.task_eval`). Logs one summary line per split."""
        from tunesmith.engine.distributed import all_reduce_sum

        results: dict[str, float] = {}
        for name, dataset in self.eval_sets().items():
            results.update(
                teacher_forced_metrics(
                    model,
                    self.tokenizer,
                    dataset,
                    name=name,
                    stage=self.cfg.stage,
                    batch_size=self.batch_size,
                    device=self.device,
                    autocast=self.autocast,
                    world_size=self.dist.world_size,
                    rank=self.dist.rank,
                    reduce=all_reduce_sum,
                )
            )
            if self.cfg.stage == "piano_task" and self.cfg.task_eval.enabled:
                results.update(
                    free_running_metrics(
                        model,
                        self.tokenizer,
                        dataset,
                        name=name,
                        tasks=self.cfg.piano_task.tasks,
                        cfg=self.cfg.task_eval,
                        mean_velocity=self.train_mean_velocity(),
                        world_size=self.dist.world_size,
                        rank=self.dist.rank,
                        reduce=all_reduce_sum,
                        uncond_prefix=self.conditioner.unconditional() if len(self.conditioner) else None,
                    )
                )
        if self.dist.is_main:
            tasks = self.cfg.piano_task.tasks if self.cfg.stage == "piano_task" else []
            for line in split_summary_lines(results, tasks):
                log.info("evaluate epoch %d | %s", epoch, line)
        return results

    def train_mean_velocity(self) -> float:
        """Mean velocity of the training split's notes: the constant baseline of the velocity tasks."""
        from tunesmith.data.datasets.midi import mean_velocity

        if self._mean_velocity is None:
            self._mean_velocity = mean_velocity(self.store, self.store.select("train"))
        return self._mean_velocity

    # ------------------------------------------------------------------ generate

    @torch.no_grad()
    def generate(self, model: nn.Module, epoch: int) -> None:
        """A few samples under samples/epoch_N/: continuations (pretrain) or filled-in velocities."""
        from tunesmith.models.midi.generation import (
            SamplingConfig,
            complete_notes,
            continue_notes,
            denoise_notes,
            fill_velocities,
        )
        from tunesmith.models.midi.notes import write_midi
        from tunesmith.models.midi.render import render_wav
        from tunesmith.models.midi.tasks import NOTE_DENOISE_TASKS, PARTITION_TASKS, add_note_noise, partition_target

        g = self.cfg.generate
        ids = self.store.select("valid") or self.store.select("train")
        out = self.run.samples_dir / f"epoch_{epoch:04d}"
        written = []
        task = self.cfg.piano_task.tasks[0] if self.cfg.stage == "piano_task" else "continue"
        for k, piece in enumerate(ids[: g.num_samples]):
            notes = self.store.notes(piece)
            sampling = SamplingConfig(g.temperature, g.top_k, g.top_p, seed=k, guidance=g.guidance)
            prefix = self.conditioner.piece_prefix(self.store.pieces[piece]) if len(self.conditioner) else None
            uncond = self.conditioner.unconditional() if prefix is not None and g.guidance != 1.0 else None
            conditions = {"prefix": prefix, "uncond_prefix": uncond}
            npr = self.cfg.piano_task.notes_per_record
            if task in VELOCITY_TASKS:
                part = notes.take(slice(0, 2 * npr))
                result = fill_velocities(
                    model, self.tokenizer, part, self.cfg.piano_task, sampling, task=task, **conditions
                )
            elif task in PARTITION_TASKS:
                # the source half of two slices, as in training; the result adds the model's other half
                part = notes.take(slice(0, 2 * npr))
                part = part.take(~partition_target(task, part, np.random.default_rng(k)))
                result, _ = complete_notes(
                    model, self.tokenizer, task, part, self.cfg.piano_task, sampling, **conditions
                )
            elif task in NOTE_DENOISE_TASKS:  # the noisy notes of two slices, as in training; the model cleans them
                part = notes.take(slice(0, 2 * npr))
                t = self.tokenizer
                part = add_note_noise(
                    task, part, self.cfg.piano_task, np.random.default_rng(k), t.pitch_min, t.pitch_max
                )
                result, _ = denoise_notes(model, t, task, part, self.cfg.piano_task, sampling, **conditions)
            else:
                part = self.tokenizer.decode(self.tokenizer.encode(notes)[: g.prompt_tokens])
                result, _ = continue_notes(model, self.tokenizer, part, g.tokens, sampling, **conditions)
            written.append(write_midi(part, out / f"{k:02d}_prompt.mid"))
            written.append(write_midi(result, out / f"{k:02d}_{task}.mid"))
        if g.render_wav:
            for path in written:
                render_wav(path)
        if written:
            log.info("wrote %d MIDI samples to %s", len(written), out)

    # ------------------------------------------------------------------ checkpoint extras

    def checkpoint_meta(self) -> dict:
        """In config.json of every checkpoint and exported model: enough to decode without the training state."""
        meta = {"tokenizer_desc": self.tokenizer.describe(), "stage": self.cfg.stage}
        if len(self.conditioner):
            meta["conditioning"] = self.conditioner.meta()
        if self.cfg.stage == "piano_task":
            meta["piano_task"] = to_dict(self.cfg.piano_task)
        return meta

    def register_extra_state(self, extra: StateRegistry) -> None:
        """Plain data saved in every checkpoint: the tokenizer description (so a checkpoint decodes on its
        own, and a resume with another vocabulary is refused), the stage, the number of (non-padding)
        tokens trained on and, for piano tasks, their config."""
        extra.register_value("tokenizer_desc", self.tokenizer.describe, self._check_tokenizer)
        extra.register_value("stage", lambda: self.cfg.stage)
        extra.register_value("tokens_seen", self._total_tokens_seen, self._resume_tokens_seen)
        if self.cfg.stage == "piano_task":
            extra.register_value("piano_task", lambda: to_dict(self.cfg.piano_task), self._resume_piano_task)

    def _resume_piano_task(self, stored: dict | None) -> None:
        """A run saved before ``velocity_layout`` existed goes on with the layout it trained with (appended)."""
        from tunesmith.models.midi.loading import stored_piano_task

        layout = stored_piano_task(stored).get("velocity_layout", self.cfg.piano_task.velocity_layout)
        if layout != self.cfg.piano_task.velocity_layout:
            log.info("resuming with piano_task.velocity_layout=%s, the layout this run trained with", layout)
            self.cfg.piano_task.velocity_layout = layout

    def _check_tokenizer(self, stored: dict) -> None:
        from tunesmith.tasks.midi_bpe import comparable_desc  # the vocabulary is compared, not MidiTok's version

        stored, current = comparable_desc(dict(stored or {})), comparable_desc(self.tokenizer.describe())
        if stored and stored != current:
            raise UserError(
                "this run's checkpoint was trained with another tokenizer vocabulary than the one built now "
                "(a different MidiTok version?); resume with the library versions it was trained with"
            )

    def _total_tokens_seen(self) -> int:
        """Summed over ranks: every rank saves the checkpoint state together."""
        from tunesmith.engine.distributed import all_reduce_sum

        seen = all_reduce_sum(torch.tensor([float(self._tokens_seen)], dtype=torch.float64, device=self.device))
        return int(seen.item())

    def _resume_tokens_seen(self, total: int) -> None:
        # the total lives on rank 0 only, so that the sum over ranks at the next checkpoint stays right
        self._tokens_seen = int(total) if self.dist.is_main else 0
