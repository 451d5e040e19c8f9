"""Measure AudioCraft 1.3.0 on this CPU, as the peer in tunesmith's benchmarks; prints one JSON object.

Run it with the peer venv made by ``bash benchmarks/peers/setup_audiocraft.sh``::

    benchmarks/.work/audiocraft-venv/bin/python benchmarks/peers/audiocraft_peer.py lm-train --dim 256 ...
    ... lm-generate | codec-train | codec-encode   (``--help`` on each lists its flags)

Models are built by AudioCraft's own builders from its own Hydra configs (the sdist's ``config/``),
composed exactly as ``dora run solver=...`` would, plus the overrides listed in the JSON's
``hydra_overrides``. The training steps re-enact ``MusicGenSolver.run_step`` and
``CompressionSolver.run_step`` (their solvers need a Dora experiment and a dataset) with AudioCraft's
own pieces: its LMModel, delay pattern, conditioners, cross-entropy, optimizer and LR-schedule
builders; its EncodecModel, MS-STFT discriminator, losses and balancer. Every deviation from its
training path is listed in benchmarks/peers/README.md.

Times are wall-clock seconds per step (``time.perf_counter``), warm-up steps excluded; the JSON gives
the median and every step time. AudioCraft's logs and warnings go to stderr; stdout holds the JSON only.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import platform
import random
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG_DIR = ROOT / "benchmarks" / ".work" / "audiocraft-config"

# Words for synthetic text descriptions: none is an English stop word, so AudioCraft's whitespace
# tokenizer keeps every one and a description of N words gives exactly N condition tokens.
DESCRIPTION_VOCABULARY = (
    "ambient piano melody drums bass guitar synth strings violin cello jazz rock techno house "
    "orchestral cinematic lofi upbeat mellow energetic dreamy dark bright warm acoustic electric "
    "groove rhythm chords arpeggio pad lead vocal choir brass trumpet saxophone flute harp organ "
    "percussion kick snare hihat reverb echo distortion funk soul blues reggae disco ballad anthem"
)
DESCRIPTION_WORDS = DESCRIPTION_VOCABULARY.split()


class PeerError(Exception):
    """A problem with the peer set-up or arguments, reported without a traceback."""


# ---------------------------------------------------------------------------------------------- helpers


def setup_torch(threads: int, seed: int) -> None:
    """Fix torch's intra-op threads (AudioCraft's config would set 1) and seed every RNG AudioCraft draws from."""
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def compose_config(config_dir: Path, solver: str, overrides: list[str]) -> Any:
    """Compose AudioCraft's Hydra config as ``dora run solver=<solver> <overrides>`` would (an OmegaConf DictConfig)."""
    if not (config_dir / "config.yaml").is_file():
        raise PeerError(
            f"AudioCraft's Hydra configs are missing: no {config_dir / 'config.yaml'}. "
            "Run `bash benchmarks/peers/setup_audiocraft.sh`, or pass --config-dir DIR (the sdist's config/ folder)."
        )
    os.environ.setdefault("USER", getpass.getuser())  # config.yaml interpolates ${oc.env:USER}
    # AudioCraft composes with version_base 1.1; Hydra warns about that on every compose.
    warnings.filterwarnings("ignore", message=r"(?s).*version_base=\"1\.1\" selects Hydra 1\.1")
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(config_dir.resolve()), version_base="1.1", job_name="peer"):
            return compose(config_name="config", overrides=[f"solver={solver}", *overrides])
    except (HydraException, OmegaConfBaseException) as exc:
        raise PeerError(f"AudioCraft config override rejected ({exc}); check the --hydra values") from exc


def time_steps(step: Callable[[int], Any], steps: int, warmup: int) -> tuple[list[float], list[float], list[Any]]:
    """Run ``step(i)`` for warm-up then measured steps.

    Returns the measured wall-clock times (s), the process CPU times (s, all threads) of the same
    steps, and the step results. CPU time / wall time well below the thread count means the
    machine was busy with something else.
    """
    times, cpu_times, results = [], [], []
    for i in range(warmup + steps):
        start, cpu_start = time.perf_counter(), time.process_time()
        result = step(i)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        if i >= warmup:
            times.append(elapsed)
            cpu_times.append(cpu)
            results.append(result)
    return times, cpu_times, results


def base_report(
    command: str, args: argparse.Namespace, overrides: list[str], times: list[float], cpu_times: list[float]
) -> dict[str, Any]:
    import audiocraft
    import torch

    settings = {k: v for k, v in vars(args).items() if k not in {"func", "command", "config_dir"}}
    return {
        "peer": "audiocraft",
        "command": command,
        "audiocraft_version": audiocraft.__version__,
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
        "settings": settings,
        "hydra_overrides": overrides,
        "warmup_steps": args.warmup,
        "step_times_s": [round(t, 6) for t in times],
        "median_step_s": round(statistics.median(times), 6),
        "step_cpu_times_s": [round(t, 6) for t in cpu_times],
        "cpu_per_wall": round(sum(cpu_times) / sum(times), 3),
    }


def json_scalar(value: Any) -> Any:
    """json.dumps fallback for numpy / torch scalars (AudioCraft's frame rates are numpy integers)."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def count_parameters(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


def int_list(text: str) -> list[int]:
    """argparse type: "8,5,4,4" -> [8, 5, 4, 4]."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive comma-separated integers, got {text!r}")
    return values


def loss_weights(text: str) -> dict[str, float]:
    """argparse type: "adv=4,feat=4,l1=0.1" -> {"adv": 4.0, ...} (AudioCraft's ``losses.*`` keys)."""
    known = {"adv", "feat", "l1", "l2", "mel", "mrstft", "msspec", "sisnr"}
    weights: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep or name not in known:
            raise argparse.ArgumentTypeError(f"expected NAME=WEIGHT with NAME in {sorted(known)}, got {item!r}")
        try:
            weights[name] = float(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"weight of {name} is not a number: {value!r}") from exc
    return weights


def yaml_list(values: list[int]) -> str:
    return "[" + ",".join(str(v) for v in values) + "]"


def descriptions(count: int, words: int, seed: int) -> list[str]:
    """``count`` deterministic synthetic descriptions of ``words`` words each."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(DESCRIPTION_WORDS) for _ in range(words)) for _ in range(count)]


# ---------------------------------------------------------------------------------------------- LM


def spacy_blank_fallback() -> list[str]:
    """Make ``spacy.load`` fall back to ``spacy.blank`` when a pipeline package is missing.

    AudioCraft's whitespace tokenizer loads ``en_core_web_sm`` and would try to download it (no
    network here). Returns the list that records which pipelines fell back.
    """
    import spacy

    fell_back: list[str] = []
    real_load = spacy.load

    def load(name: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return real_load(name, *args, **kwargs)
        except OSError:
            fell_back.append(name)
            return spacy.blank(name.split("_")[0])

    spacy.load = load
    return fell_back


def lm_overrides(args: argparse.Namespace) -> list[str]:
    text_dim = args.text_dim or args.dim
    overrides = [
        "device=cpu",
        "dtype=float32",
        "autocast=false",
        "efficient_attention_backend=torch",
        f"num_threads={args.threads}",
        f"transformer_lm.dim={args.dim}",
        f"transformer_lm.num_heads={args.heads}",
        f"transformer_lm.num_layers={args.layers}",
        f"transformer_lm.n_q={args.n_q}",
        f"transformer_lm.card={args.card}",
        f"codebooks_pattern.delay.delays={yaml_list(list(range(args.n_q)))}",
        "optim.optimizer=adamw",
        f"optim.lr={args.lr}",
    ]
    if args.conditioner == "lut":
        overrides += [
            "conditioners.description.model=lut",
            f"+conditioners.description.lut={{n_bins:{args.text_bins},dim:{text_dim},tokenizer:whitespace}}",
        ]
    else:
        overrides.append("conditioner=none")
    return overrides + list(args.hydra)


def build_lm(args: argparse.Namespace) -> tuple[Any, Any, list[str], dict[str, Any]]:
    """AudioCraft's LMModel from the MusicGen base solver config; returns (lm, cfg, overrides, notes)."""
    from audiocraft.models import builders
    from audiocraft.modules.conditioners import LUTConditioner, WhiteSpaceTokenizer

    overrides = lm_overrides(args)
    cfg = compose_config(args.config_dir, "musicgen/musicgen_base_32khz", overrides)
    fell_back = spacy_blank_fallback()
    lm = builders.get_lm_model(cfg)
    notes: dict[str, Any] = {"spacy_fallback": fell_back}
    for conditioner in lm.condition_provider.conditioners.values():
        tokenizer = getattr(conditioner, "tokenizer", None)
        if isinstance(conditioner, LUTConditioner) and isinstance(tokenizer, WhiteSpaceTokenizer):
            if "lemmatizer" not in tokenizer.nlp.pipe_names:
                tokenizer.lemma = False  # a blank pipeline has no lemmas: hash the words themselves
            notes["text_tokenizer_lemma"] = tokenizer.lemma
    return lm, cfg, overrides, notes


def check_lm_args(args: argparse.Namespace) -> None:
    if args.dim % args.heads:
        raise PeerError(f"--dim {args.dim} is not divisible by --heads {args.heads}")
    if args.frames <= args.n_q:
        raise PeerError(f"--frames {args.frames} must exceed --n-q {args.n_q} (the delay pattern needs n_q - 1 steps)")
    if getattr(args, "top_k", 0) > args.card:
        raise PeerError(f"--top-k {args.top_k} exceeds the codebook size --card {args.card}")


def conditions_for(args: argparse.Namespace, batch: int, seed: int) -> list[Any]:
    from audiocraft.modules.conditioners import ConditioningAttributes

    if args.conditioner == "none":
        return []
    return [ConditioningAttributes(text={"description": d}) for d in descriptions(batch, args.text_words, seed)]


def run_lm_train(args: argparse.Namespace) -> dict[str, Any]:
    """Forward (delay pattern, text condition), per-codebook cross-entropy, backward, clip, AdamW + LR schedule."""
    check_lm_args(args)
    setup_torch(args.threads, args.seed)
    import flashy
    import torch
    from audiocraft.solvers import builders as solver_builders
    from audiocraft.solvers.musicgen import MusicGenSolver

    lm, cfg, overrides, notes = build_lm(args)
    lm.train()
    optimizer = solver_builders.get_optimizer(solver_builders.get_optim_parameter_groups(lm), cfg.optim)
    total_updates = int(cfg.optim.epochs) * int(cfg.optim.updates_per_epoch)
    scheduler = solver_builders.get_lr_scheduler(optimizer, cfg.schedule, total_updates)
    max_norm = float(cfg.optim.max_norm)
    generator = torch.Generator().manual_seed(args.seed)
    total = args.warmup + args.steps
    shape = (args.batch, args.n_q, args.frames)
    codes = [torch.randint(0, args.card, shape, generator=generator) for _ in range(total)]
    conditions = [conditions_for(args, args.batch, args.seed + i) for i in range(total)]

    def step(i: int) -> float:
        # MusicGenSolver._prepare_tokens_and_attributes (tokens come precomputed, as with its token cache)
        attributes = lm.att_dropout(lm.cfg_dropout(conditions[i]))
        condition_tensors = lm.condition_provider(lm.condition_provider.tokenize(attributes)) if attributes else {}
        padding_mask = torch.ones_like(codes[i], dtype=torch.bool)
        # MusicGenSolver.run_step
        output = lm.compute_predictions(codes[i], [], condition_tensors)
        mask = padding_mask & output.mask
        ce, _ = MusicGenSolver._compute_cross_entropy(None, output.logits, codes[i], mask)
        with flashy.distrib.eager_sync_model(lm):
            ce.backward()
        if max_norm:
            torch.nn.utils.clip_grad_norm_(lm.parameters(), max_norm)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        optimizer.zero_grad()
        return float(ce.detach())

    times, cpu_times, losses = time_steps(step, args.steps, args.warmup)
    report = base_report("lm-train", args, overrides, times, cpu_times)
    median = report["median_step_s"]
    report.update(
        parameters=count_parameters(lm),
        conditioner=args.conditioner,
        cross_attention=bool(lm.fuser.fuse2cond["cross"]),
        cfg_dropout=float(cfg.classifier_free_guidance.training_dropout),
        optimizer=type(optimizer).__name__,
        lr_scheduler=type(scheduler).__name__ if scheduler is not None else None,
        max_norm=max_norm,
        losses=[round(v, 5) for v in losses],
        codebook_tokens_per_step=args.batch * args.frames * args.n_q,
        codebook_tokens_per_s=round(args.batch * args.frames * args.n_q / median, 2),
        **notes,
    )
    return report


def run_lm_generate(args: argparse.Namespace) -> dict[str, Any]:
    """``LMModel.generate`` as ``MusicGen.generate`` calls it: sampling, top-k, CFG in one doubled batch."""
    check_lm_args(args)
    setup_torch(args.threads, args.seed)
    import torch

    lm, _, overrides, notes = build_lm(args)
    lm.eval()
    conditions = conditions_for(args, args.batch, args.seed)
    shapes: list[tuple[int, ...]] = []

    def step(i: int) -> None:
        torch.manual_seed(args.seed + i)
        codes = lm.generate(
            None,
            conditions,
            num_samples=None if conditions else args.batch,
            max_gen_len=args.frames,
            use_sampling=True,
            temp=1.0,
            top_k=args.top_k,
            top_p=0.0,
            cfg_coef=args.cfg,
            two_step_cfg=False,
        )
        shapes.append(tuple(codes.shape))

    times, cpu_times, _ = time_steps(step, args.steps, args.warmup)
    expected = (args.batch, args.n_q, args.frames)
    if shapes[-1] != expected:
        raise PeerError(f"generate returned codes of shape {shapes[-1]}, expected {expected}")
    report = base_report("lm-generate", args, overrides, times, cpu_times)
    median = report["median_step_s"]
    report.update(
        parameters=count_parameters(lm),
        conditioner=args.conditioner,
        cfg_applied=bool(conditions) and args.cfg != 1.0,
        model_batch=args.batch * (2 if conditions else 1),
        decode_steps=args.frames + args.n_q - 1,
        frames_per_s=round(args.frames / median, 2),
        batch_frames_per_s=round(args.batch * args.frames / median, 2),
        **notes,
    )
    return report


# ---------------------------------------------------------------------------------------------- codec


def codec_overrides(args: argparse.Namespace) -> list[str]:
    overrides = [
        "device=cpu",
        "dtype=float32",
        "autocast=false",
        f"num_threads={args.threads}",
        f"sample_rate={args.sample_rate}",
        f"channels={args.channels}",
        f"seanet.dimension={args.dimension}",
        f"seanet.n_filters={args.n_filters}",
        f"seanet.n_residual_layers={args.residual_layers}",
        f"seanet.lstm={args.lstm_layers}",
        f"seanet.ratios={yaml_list(args.seanet_ratios)}",
        f"rvq.n_q={args.n_q}",
        f"rvq.bins={args.bins}",
        f"msstftd.filters={args.disc_filters}",
        f"msstftd.in_channels={args.channels}",
        f"msstftd.n_ffts={yaml_list(args.disc_n_ffts)}",
        f"msstftd.hop_lengths={yaml_list(args.disc_hop_lengths)}",
        f"msstftd.win_lengths={yaml_list(args.disc_win_lengths)}",
        f"dataset.segment_duration={getattr(args, 'segment', 1.0)}",
    ]
    if getattr(args, "losses", None):
        overrides += [f"losses.{name}={weight}" for name, weight in args.losses.items()]
    if getattr(args, "balance_grads", None) is not None:
        overrides.append(f"balancer.balance_grads={str(args.balance_grads).lower()}")
    if getattr(args, "adversarial_every", None) is not None:
        overrides.append(f"adversarial.every={args.adversarial_every}")
    if getattr(args, "ema", False):
        overrides.append("optim.ema.device=cpu")
    return overrides + list(args.hydra)


def check_codec_args(args: argparse.Namespace) -> None:
    if not len(args.disc_n_ffts) == len(args.disc_hop_lengths) == len(args.disc_win_lengths):
        raise PeerError("--disc-n-ffts, --disc-hop-lengths and --disc-win-lengths need the same number of scales")
    hop = 1
    for ratio in args.seanet_ratios:
        hop *= ratio
    if args.sample_rate % hop:
        raise PeerError(f"--sample-rate {args.sample_rate} is not a multiple of the SEANet hop {hop} (ratios' product)")


def build_codec(args: argparse.Namespace) -> tuple[Any, Any, list[str]]:
    """AudioCraft's EncodecModel (SEANet + RVQ) from the EnCodec/MusicGen 32 kHz compression solver config."""
    from audiocraft.models import builders

    check_codec_args(args)
    overrides = codec_overrides(args)
    cfg = compose_config(args.config_dir, "compression/encodec_musicgen_32khz", overrides)
    return builders.get_compression_model(cfg), cfg, overrides


class CodecTrainStep:
    """``CompressionSolver.run_step`` in training mode, built from the same AudioCraft pieces as its ``__init__``."""

    def __init__(self, model: Any, cfg: Any, ema: bool) -> None:
        import torch
        from audiocraft.solvers import builders
        from torch import nn

        self.model = model
        self.cfg = cfg
        self.optimizer = builders.get_optimizer(model.parameters(), cfg.optim)
        self.adv_losses = builders.get_adversarial_losses(cfg)
        self.aux_losses = nn.ModuleDict()
        self.info_losses = nn.ModuleDict()
        weights: dict[str, float] = {}
        for name, weight in cfg.losses.items():
            if name in ("adv", "feat"):
                for adv_name in self.adv_losses:
                    weights[f"{name}_{adv_name}"] = weight
            elif weight > 0:
                self.aux_losses[name] = builders.get_loss(name, cfg)
                weights[name] = weight
            else:
                self.info_losses[name] = builders.get_loss(name, cfg)
        self.loss_weights = weights
        self.balancer = builders.get_balancer(weights, cfg.balancer)
        self.ema = builders.get_ema(nn.ModuleDict({"model": model}), cfg.optim.ema) if ema else None
        self.rng = torch.Generator().manual_seed(1234)  # CompressionSolver.run_epoch seeds 1234 + epoch

    def __call__(self, index: int, x: Any) -> dict[str, float]:
        import flashy
        import torch

        y = x.clone()
        qres = self.model(x)
        y_pred = qres.x
        metrics: dict[str, Any] = {"bandwidth": qres.bandwidth.mean()}
        if self.adv_losses and torch.rand(1, generator=self.rng).item() <= 1 / self.cfg.adversarial.every:
            d_losses = [adversary.train_adv(y_pred, y) for adversary in self.adv_losses.values()]
            metrics["d_loss"] = torch.stack(d_losses).sum()
        balanced: dict[str, Any] = {}
        penalty = qres.penalty if qres.penalty is not None and qres.penalty.requires_grad else None
        for adv_name, adversary in self.adv_losses.items():
            adv_loss, feat_loss = adversary(y_pred, y)
            balanced[f"adv_{adv_name}"] = adv_loss
            balanced[f"feat_{adv_name}"] = feat_loss
        for name, criterion in self.aux_losses.items():
            balanced[name] = criterion(y_pred, y)
        if penalty is not None:  # the commitment loss is not balanced: its own backward first
            metrics["penalty"] = penalty
            penalty.backward(retain_graph=True)
            metrics["ratio1"] = self._grad_norm()
        metrics["g_loss"] = self.balancer.backward(balanced, y_pred)
        metrics["ratio2"] = self._grad_norm()
        flashy.distrib.sync_model(self.model)
        if self.cfg.optim.max_norm:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.max_norm)
        self.optimizer.step()
        self.optimizer.zero_grad()
        with torch.no_grad():
            for name, criterion in self.info_losses.items():
                metrics[name] = criterion(y_pred, y)
        if self.ema is not None and (index + 1) % self.cfg.optim.ema.updates == 0:
            self.ema.step()
        metrics.update(balanced)
        return {name: round(float(value.detach()), 5) for name, value in metrics.items()}

    def _grad_norm(self) -> Any:
        """Global L2 norm of the generator's gradients, as the solver logs it (ratio1, ratio2)."""
        return sum(p.grad.norm(p=2).pow(2) for p in self.model.parameters() if p.grad is not None).sqrt()


def synthetic_audio(batch: int, channels: int, samples: int, sample_rate: int, seed: int) -> Any:
    """[batch, channels, samples] float32: a random-pitch harmonic tone plus noise, peak about 0.5."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(samples, dtype=torch.float32) / sample_rate
    f0 = 80.0 + 400.0 * torch.rand(batch, channels, 1, generator=generator)
    tone = sum(torch.sin(2 * torch.pi * k * f0 * t) / k for k in (1, 2, 3))
    noise = torch.randn(batch, channels, samples, generator=generator)
    return 0.25 * tone + 0.05 * noise


def run_codec_train(args: argparse.Namespace) -> dict[str, Any]:
    """One discriminator update then one generator update (balanced losses + commitment) per step."""
    setup_torch(args.threads, args.seed)
    model, cfg, overrides = build_codec(args)
    model.train()
    trainer = CodecTrainStep(model, cfg, ema=args.ema)
    samples = round(args.segment * args.sample_rate)
    batches = [
        synthetic_audio(args.batch, args.channels, samples, args.sample_rate, args.seed + i)
        for i in range(args.warmup + args.steps)
    ]
    times, cpu_times, metrics = time_steps(lambda i: trainer(i, batches[i]), args.steps, args.warmup)
    report = base_report("codec-train", args, overrides, times, cpu_times)
    median = report["median_step_s"]
    discriminators = list(trainer.adv_losses.values())
    report.update(
        parameters=count_parameters(model),
        discriminator_parameters=sum(count_parameters(a.adversary) for a in discriminators),
        frame_rate=model.frame_rate,
        loss_weights=trainer.loss_weights,
        info_losses=list(trainer.info_losses.keys()),
        balancer={k: v for k, v in dict(cfg.balancer).items()},
        optimizer=type(trainer.optimizer).__name__,
        ema=trainer.ema is not None,
        kmeans_init_in_warmup=args.warmup > 0,
        last_step_metrics=metrics[-1],
        audio_seconds_per_step=args.batch * args.segment,
        audio_seconds_per_s=round(args.batch * args.segment / median, 3),
        steps_per_s=round(1.0 / median, 4),
    )
    return report


def run_codec_encode(args: argparse.Namespace) -> dict[str, Any]:
    """``EncodecModel.encode`` (SEANet encoder + RVQ codes) under no_grad, of ``--seconds`` of audio per item."""
    setup_torch(args.threads, args.seed)
    import torch

    model, _, overrides = build_codec(args)
    # The RVQ codebooks start empty and are k-means-initialised on their first training forward.
    model.train()
    with torch.no_grad():
        model(synthetic_audio(2, args.channels, args.sample_rate, args.sample_rate, args.seed))
    model.eval()
    samples = round(args.seconds * args.sample_rate)
    audio = synthetic_audio(args.batch, args.channels, samples, args.sample_rate, args.seed + 1)
    shapes: list[tuple[int, ...]] = []

    def step(_: int) -> None:
        with torch.no_grad():
            codes, scale = model.encode(audio)
        shapes.append(tuple(codes.shape))

    times, cpu_times, _ = time_steps(step, args.steps, args.warmup)
    report = base_report("codec-encode", args, overrides, times, cpu_times)
    median = report["median_step_s"]
    report.update(
        parameters=count_parameters(model),
        frame_rate=model.frame_rate,
        codes_shape=list(shapes[-1]),
        audio_seconds_per_step=args.batch * args.seconds,
        audio_seconds_per_s=round(args.batch * args.seconds / median, 3),
    )
    return report


# ---------------------------------------------------------------------------------------------- CLI


def add_common(p: argparse.ArgumentParser, steps: int, warmup: int) -> None:
    p.add_argument("--steps", type=int, default=steps, help="measured steps (default %(default)s)")
    p.add_argument("--warmup", type=int, default=warmup, help="unmeasured steps first (default %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--hydra",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra AudioCraft Hydra override, applied last (repeatable), e.g. transformer_lm.hidden_scale=4",
    )
    p.add_argument("--config-dir", type=Path, default=DEFAULT_CONFIG_DIR, help="AudioCraft's config/ folder")


def add_lm(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--n-q", type=int, default=4, help="codebooks")
    p.add_argument("--card", type=int, default=2048, help="codebook size")
    p.add_argument(
        "--conditioner",
        choices=("lut", "none"),
        default="lut",
        help="lut: AudioCraft's lookup-table text conditioner fused by cross-attention (default); none: unconditional",
    )
    p.add_argument("--text-words", type=int, default=16, help="words per synthetic description (= condition tokens)")
    p.add_argument("--text-bins", type=int, default=2000, help="LUT vocabulary (hash bins)")
    p.add_argument("--text-dim", type=int, default=0, help="LUT embedding width; 0 = --dim")


def add_codec(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sample-rate", type=int, default=32000)
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--dimension", type=int, default=128, help="latent dimension (seanet.dimension)")
    p.add_argument("--n-filters", type=int, default=64, help="seanet.n_filters")
    p.add_argument("--residual-layers", type=int, default=1, help="seanet.n_residual_layers")
    p.add_argument("--lstm-layers", type=int, default=2, help="seanet.lstm")
    p.add_argument("--seanet-ratios", type=int_list, default=[8, 5, 4, 4], help="encoder strides, e.g. 8,5,4,4")
    p.add_argument("--n-q", type=int, default=4, help="RVQ codebooks")
    p.add_argument("--bins", type=int, default=2048, help="RVQ codebook size")
    p.add_argument("--disc-filters", type=int, default=32, help="msstftd.filters")
    p.add_argument("--disc-n-ffts", type=int_list, default=[1024, 2048, 512, 256, 128])
    p.add_argument("--disc-hop-lengths", type=int_list, default=[256, 512, 128, 64, 32])
    p.add_argument("--disc-win-lengths", type=int_list, default=[1024, 2048, 512, 256, 128])
    p.add_argument("--batch", type=int, default=4)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("lm-train", help="LM training step: codebook tokens/s")
    add_lm(p)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--frames", type=int, default=500)
    p.add_argument("--lr", type=float, default=1e-4)
    add_common(p, steps=5, warmup=1)
    p.set_defaults(func=run_lm_train)

    p = sub.add_parser("lm-generate", help="LM generation with classifier-free guidance: frames/s")
    add_lm(p)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--frames", type=int, default=250)
    p.add_argument("--cfg", type=float, default=3.0, help="guidance coefficient")
    p.add_argument("--top-k", type=int, default=250)
    p.add_argument("--lr", type=float, default=1e-4, help=argparse.SUPPRESS)
    add_common(p, steps=3, warmup=1)
    p.set_defaults(func=run_lm_generate)

    p = sub.add_parser("codec-train", help="codec generator + discriminator update: audio seconds/s")
    add_codec(p)
    p.add_argument("--segment", type=float, default=1.0, help="seconds per item")
    p.add_argument("--losses", type=loss_weights, default=None, help="loss weights, e.g. adv=4,feat=4,l1=0.1,msspec=2")
    p.add_argument(
        "--balance-grads",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="AudioCraft's gradient balancer (config default: on); off = plain weighted sum",
    )
    p.add_argument("--adversarial-every", type=int, default=None, help="discriminator update every N steps")
    p.add_argument("--ema", action="store_true", help="also update AudioCraft's EMA of the model (as its config does)")
    add_common(p, steps=5, warmup=1)
    p.set_defaults(func=run_codec_train)

    p = sub.add_parser("codec-encode", help="codec encoding: audio seconds per second")
    add_codec(p)
    p.add_argument("--seconds", type=float, default=30.0, help="seconds of audio per item")
    add_common(p, steps=3, warmup=1)
    p.set_defaults(func=run_codec_encode, batch=1)
    return parser


def check_common(args: argparse.Namespace) -> None:
    positive = ["steps", "threads", "batch"] + [
        name
        for name in ("dim", "layers", "heads", "n_q", "card", "frames", "text_words", "text_bins", "bins")
        if hasattr(args, name)
    ]
    for name in positive:
        if getattr(args, name) <= 0:
            raise PeerError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.warmup < 0:
        raise PeerError(f"--warmup must be >= 0, got {args.warmup}")
    for name in ("segment", "seconds"):
        if hasattr(args, name) and getattr(args, name) <= 0:
            raise PeerError(f"--{name} must be positive, got {getattr(args, name)}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_common(args)
        with contextlib.redirect_stdout(sys.stderr):  # keep stdout for the JSON alone
            report = args.func(args)
    except PeerError as exc:
        print(f"audiocraft_peer: error: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:
        print(
            f"audiocraft_peer: error: {exc}. Run this with benchmarks/.work/audiocraft-venv/bin/python "
            "(create it with `bash benchmarks/peers/setup_audiocraft.sh`).",
            file=sys.stderr,
        )
        return 2
    print(json.dumps(report, default=json_scalar))
    return 0


if __name__ == "__main__":
    sys.exit(main())
