"""The codec task: train an EnCodec-style compression model on a prepared dataset.

One update = generator step (reconstruction, multi-scale mel, adversarial and feature-matching losses,
optionally balanced by their gradient norms, plus the quantizer's commitment loss) followed by a
discriminator step (hinge loss on the same reconstructions, detached): ``train_loss`` hands the engine
one loss per optimizer. Training items are random crops of ``dataset.segment_seconds`` seconds
(formerly ``dataset.segment_duration``, still accepted) drawn with the sample key's seed; valid items
are fixed crops.
Valid metrics: SI-SNR (dB, higher is better), mel distance, L1. The evaluate stage runs the codec check
on fixed valid segments; the generate stage writes their reconstructions under ``samples/``.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import ClassVar, Literal

import torch
from torch import nn
from torch.utils.data import Dataset

from tunesmith.config import SEGMENT_SECONDS, OptimConfig, Range, TrainConfig, ranged
from tunesmith.data.datasets.audio import AudioCrops
from tunesmith.engine.precision import no_autocast
from tunesmith.engine.solver import LossOutput, Solver
from tunesmith.engine.state import StateRegistry
from tunesmith.errors import UserError
from tunesmith.models.codec.balancer import GradientBalancer
from tunesmith.models.codec.discriminator import MultiScaleSTFTDiscriminator
from tunesmith.models.codec.losses import (
    MultiScaleMelLoss,
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
    sisnr_loss,
)
from tunesmith.models.codec.model import CodecModel, CodecModelConfig

log = logging.getLogger("tunesmith.codec")


# --------------------------------------------------------------------------- config


@dataclasses.dataclass
class CodecDatasetConfig:
    batch_size: int = ranged(8, ge=1)
    segment_seconds: float = ranged(1.0, gt=0)  # seconds per training crop (formerly segment_duration)
    valid_duration: float = ranged(2.0, gt=0)  # seconds per (fixed) valid crop
    num_workers: int = ranged(0, ge=0)


@dataclasses.dataclass
class CodecLossConfig:
    """Loss weights. With ``balancer`` on, the weights of l1/mel/sisnr/adv/feat are shares of the gradient
    reaching the reconstruction (EnCodec's balancer); otherwise plain multipliers. ``commit`` is never balanced."""

    l1: float = 0.1
    mel: float = 2.0  # multi-scale mel (AudioCraft's "msspec")
    sisnr: float = 0.0
    adv: float = 4.0
    feat: float = 4.0
    commit: float = 1.0
    adv_loss: Literal["hinge", "hinge2", "mse"] = "hinge"
    adversarial_start: int = 0  # updates before the adversarial losses and discriminator switch on
    balancer: bool = True
    balancer_total_norm: float = 1.0
    balancer_ema_decay: float = 0.999
    balancer_per_batch_item: bool = True
    mel_range_start: int = 6  # FFT sizes 2**start .. 2**(end-1)
    mel_range_end: int = 11
    mel_n_mels: int = 64
    mel_f_min: float = 64.0
    mel_normalized: bool = True
    mel_alphas: bool = False


@dataclasses.dataclass
class DiscriminatorConfig:
    filters: int = 32
    n_ffts: list[int] = dataclasses.field(default_factory=lambda: [1024, 2048, 512, 256, 128])
    hop_lengths: list[int] = dataclasses.field(default_factory=lambda: [256, 512, 128, 64, 32])
    negative_slope: float = 0.3
    update_every: int = ranged(1, ge=1)  # discriminator step every N updates


@dataclasses.dataclass
class CodecCheckConfig:
    num_samples: int = ranged(6, ge=0)  # fixed valid segments checked (evaluate) and written (generate)
    max_seconds: float = ranged(10.0, gt=0)


@dataclasses.dataclass
class CodecConfig:
    data: str = ""  # prepared dataset folder (tunesmith prepare ... --out DIR)
    dataset: CodecDatasetConfig = dataclasses.field(default_factory=CodecDatasetConfig)
    model: CodecModelConfig = dataclasses.field(default_factory=CodecModelConfig)
    loss: CodecLossConfig = dataclasses.field(default_factory=CodecLossConfig)
    discriminator: DiscriminatorConfig = dataclasses.field(default_factory=DiscriminatorConfig)
    check: CodecCheckConfig = dataclasses.field(default_factory=CodecCheckConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    init_from: str = ""

    renamed_keys: ClassVar[dict[str, str]] = {"dataset.segment_duration": SEGMENT_SECONDS}
    value_ranges: ClassVar[dict[str, Range]] = {  # the model section is defined in models.codec
        "model.sample_rate": Range(ge=1),
        "model.channels": Range(ge=1, le=2),
        "model.dimension": Range(ge=1),
        "model.n_filters": Range(ge=1),
        "model.ratios": Range(ge=1),
        "model.n_residual_layers": Range(ge=0),
        "model.kernel_size": Range(ge=1),
        "model.residual_kernel_size": Range(ge=1),
        "model.last_kernel_size": Range(ge=1),
        "model.dilation_base": Range(ge=1),
        "model.compress": Range(ge=1),
        "model.lstm": Range(ge=0),
        "model.n_q": Range(ge=1),
        "model.bins": Range(ge=2),
        "model.ema_decay": Range(gt=0, lt=1),
        "model.kmeans_iters": Range(ge=0),
        "model.dead_code_threshold": Range(ge=0),
    }


# --------------------------------------------------------------------------- solver


class CodecSolver(Solver):
    task = "codec"
    config_class = CodecConfig
    best_metric = "mel"
    best_mode = "min"
    target_unit = "clips"  # per-clip losses: one target is one dataset.segment_seconds clip
    optimizer_metric_prefix = {"discriminator": "d_"}  # d_loss, d_grad_norm

    # ------------------------------------------------------------------ build
    @property
    def data_dir(self) -> Path:
        if not self.cfg.data:
            raise UserError("no dataset given: pass data=DIR (a folder made by `tunesmith prepare`)")
        return Path(self.cfg.data)

    def build_model(self) -> nn.Module:
        model = CodecModel(self.cfg.model)
        self._build_losses()
        return model

    def _build_losses(self) -> None:
        lc, mc = self.cfg.loss, self.cfg.model
        self.mel_loss = MultiScaleMelLoss(
            mc.sample_rate,
            lc.mel_range_start,
            lc.mel_range_end,
            n_mels=lc.mel_n_mels,
            f_min=lc.mel_f_min,
            normalized=lc.mel_normalized,
            alphas=lc.mel_alphas,
        ).to(self.device)
        weights = {"l1": lc.l1, "mel": lc.mel, "sisnr": lc.sisnr, "adv": lc.adv, "feat": lc.feat}
        self.loss_weights = {k: float(v) for k, v in weights.items() if v > 0}
        if not self.loss_weights:
            raise UserError("codec loss: every weight of l1, mel, sisnr, adv and feat is 0; set at least one")
        self.balancers: dict[bool, GradientBalancer] = {}

    def _balancer(self, adversarial: bool) -> GradientBalancer:
        """One balancer per loss set (with / without the adversarial terms), so their averages never mix."""
        if adversarial not in self.balancers:
            lc = self.cfg.loss
            weights = {k: v for k, v in self.loss_weights.items() if adversarial or k not in ("adv", "feat")}
            self.balancers[adversarial] = GradientBalancer(
                weights, lc.balancer_total_norm, lc.balancer_ema_decay, lc.balancer_per_batch_item
            )
        return self.balancers[adversarial]

    def extra_modules(self) -> dict[str, nn.Module]:
        if not self._adversarial_used():
            return {}
        dc = self.cfg.discriminator
        return {
            "discriminator": MultiScaleSTFTDiscriminator(
                self.cfg.model.channels,
                dc.filters,
                dc.n_ffts,
                dc.hop_lengths,
                negative_slope=dc.negative_slope,
            )
        }

    def _adversarial_used(self) -> bool:
        return self.cfg.loss.adv > 0 or self.cfg.loss.feat > 0

    def build_datasets(self) -> dict[str, Dataset]:
        from tunesmith.data.manifest import manifest_path

        mc, dc = self.cfg.model, self.cfg.dataset
        data = self.data_dir
        out: dict[str, Dataset] = {
            "train": AudioCrops(data, "train", mc.sample_rate, mc.channels, dc.segment_seconds),
        }
        if manifest_path(data, "valid").is_file():
            out["valid"] = AudioCrops(data, "valid", mc.sample_rate, mc.channels, dc.valid_duration)
        return out

    def data_fingerprint(self) -> dict | None:
        """The prepared dataset's manifests and dataset.json (see engine.data_identity)."""
        from tunesmith.data.prepare.fingerprint import audio_fingerprint

        return audio_fingerprint(self.data_dir)

    def preflight(self) -> list[str]:
        """Dataset and crop-length problems, found before the model is built."""
        from tunesmith.data.manifest import manifest_path, read_dataset_json

        problems = []
        if not self.cfg.data or not Path(self.cfg.data).is_dir():
            return [f"data={self.cfg.data!r}: not a folder; pass data=DIR made by `tunesmith prepare`"]
        if not manifest_path(self.cfg.data, "train").is_file():
            problems.append(f"{manifest_path(self.cfg.data, 'train')}: missing; re-run `tunesmith prepare`")
        try:
            info = read_dataset_json(self.cfg.data)
        except UserError as err:
            problems.append(str(err))
            info = {}
        mc, dc = self.cfg.model, self.cfg.dataset
        if info.get("sample_rate") and int(info["sample_rate"]) != mc.sample_rate:
            log.warning(
                "dataset is at %s Hz, the codec at %d Hz: crops are resampled on the fly (slower); "
                "prepare the dataset with --sample-rate %d to avoid it",
                info["sample_rate"],
                mc.sample_rate,
                mc.sample_rate,
            )
        crop = int(dc.segment_seconds * mc.sample_rate)
        need = MultiScaleMelLoss.largest_fft(self.cfg.loss.mel_range_end)  # preflight runs before the loss exists
        if self._adversarial_used():
            need = max(need, max(self.cfg.discriminator.n_ffts))
        if crop < need:
            problems.append(
                f"dataset.segment_seconds={dc.segment_seconds} s is {crop} samples, shorter than the largest FFT "
                f"of the losses ({need}); use a longer crop or smaller discriminator.n_ffts / loss.mel_range_end"
            )
        if len(self.cfg.discriminator.hop_lengths) != len(self.cfg.discriminator.n_ffts):
            problems.append("discriminator.hop_lengths must have one entry per discriminator.n_ffts")
        return problems

    # ------------------------------------------------------------------ losses
    def _reconstruction_losses(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        losses: dict[str, torch.Tensor] = {}
        if "l1" in self.loss_weights:
            losses["l1"] = torch.nn.functional.l1_loss(y.float(), x.float())
        if "mel" in self.loss_weights:
            losses["mel"] = self.mel_loss(x, y)
        if "sisnr" in self.loss_weights:
            losses["sisnr"] = sisnr_loss(x, y)
        return losses

    def _discriminate(self, x: torch.Tensor, y: torch.Tensor, train_disc: bool) -> tuple[list, list, list, list]:
        """Discriminator passes over reconstruction ``y`` and target ``x`` → fake/real logits and feature maps.

        With ``train_disc`` both passes keep the graph to the discriminator's parameters, so the same forwards
        serve the generator's losses and the discriminator's update; otherwise its parameters are frozen and
        the target's pass keeps no graph. The two are separate passes (not one over both batches) so that
        the generator's gradients flow back through the reconstruction's half only.
        """
        disc = self.extras["discriminator"]  # unwrapped: the engine sums its gradients over ranks
        if train_disc:
            fake_logits, fake_maps = disc(y)
            real_logits, real_maps = disc(x.to(y.dtype))
        else:
            disc.requires_grad_(False)
            try:
                fake_logits, fake_maps = disc(y)
                with torch.no_grad():
                    real_logits, real_maps = disc(x.to(y.dtype))
            finally:
                disc.requires_grad_(True)
        return fake_logits, real_logits, fake_maps, real_maps

    def _adversarial_losses(self, fake_logits: list, fake_maps: list, real_maps: list) -> dict[str, torch.Tensor]:
        losses = {}
        if "adv" in self.loss_weights:
            losses["adv"] = generator_adversarial_loss(fake_logits, self.cfg.loss.adv_loss)
        if "feat" in self.loss_weights:
            losses["feat"] = feature_matching_loss(fake_maps, real_maps)
        return losses

    def loss(self, model: nn.Module, batch: torch.Tensor) -> LossOutput:
        """Non-adversarial loss: weighted reconstruction losses + commitment, summed over items."""
        out = model(batch)
        losses = self._reconstruction_losses(batch, out.wav)
        total = sum(self.loss_weights[k] * v for k, v in losses.items()) + self.cfg.loss.commit * out.commit_loss
        n = batch.shape[0]
        return LossOutput(total * n, {k: v.detach() * n for k, v in losses.items()})

    def valid_step(self, model: nn.Module, batch: torch.Tensor) -> LossOutput:
        from tunesmith.audio.metrics import l1, mel_distance, si_snr

        out = model(batch)
        x, y = batch.float(), out.wav.float()
        losses = self._reconstruction_losses(x, y)
        total = sum(self.loss_weights[k] * v for k, v in losses.items()) + self.cfg.loss.commit * out.commit_loss
        n = batch.shape[0]
        return LossOutput(
            total * n,
            {
                "sisnr": si_snr(x, y).sum(),
                "mel": mel_distance(x, y, self.cfg.model.sample_rate).sum(),
                "l1": l1(x, y).sum(),
                "commit": out.commit_loss.detach() * n,
            },
        )

    # ------------------------------------------------------------------ training loss
    def train_loss(self, model: nn.Module, x: torch.Tensor) -> LossOutput:
        """Generator and discriminator losses of micro-batch ``x`` [B, C, T] from shared discriminator passes.

        Reconstruct; run the discriminator on reconstruction and target; take the gradient of the generator
        losses with respect to the reconstruction only (balanced or weighted), so the generator's loss is
        ``sum(y * grad) + commit``; the discriminator's hinge loss uses the same logits and reaches the
        discriminator's parameters only. Both are per-item means × B (summed over items). The engine steps
        the generator, then the discriminator: both updates see the discriminator as it was at the start.
        The adversarial terms join at ``loss.adversarial_start``; the discriminator trains every
        ``discriminator.update_every`` updates.
        """
        lc = self.cfg.loss
        adversarial = self._adversarial_used() and self.step >= lc.adversarial_start
        train_disc = adversarial and self.step % self.cfg.discriminator.update_every == 0
        n = int(x.shape[0])
        out = model(x)
        y = out.wav
        losses = self._reconstruction_losses(x, y)
        if adversarial:
            fake_logits, real_logits, fake_maps, real_maps = self._discriminate(x, y, train_disc)
            real_maps = [[f.detach() for f in maps] for maps in real_maps]
            losses.update(self._adversarial_losses(fake_logits, fake_maps, real_maps))
        metrics: dict[str, torch.Tensor | float] = {}
        with no_autocast(self.device):
            if lc.balancer:
                grad, ratios = self._balancer(adversarial).gradient(losses, y)
                metrics.update({key: value * n for key, value in ratios.items()})
            else:
                weighted_sum = sum(self.loss_weights[k] * v.float() for k, v in losses.items())
                (grad,) = torch.autograd.grad(weighted_sum, [y], retain_graph=True)
            commit = out.commit_loss.float()
            per_optimizer = {"model": ((y.float() * grad.float()).sum() + lc.commit * commit) * n}
            if train_disc:
                d_loss = discriminator_loss(fake_logits, real_logits, lc.adv_loss).float()
                per_optimizer["discriminator"] = d_loss * n
                metrics["d_loss"] = float(d_loss.detach()) * n
        values = {k: float(v.detach()) for k, v in losses.items()}
        commit_value = float(commit.detach())
        reported = sum(self.loss_weights[k] * v for k, v in values.items()) + lc.commit * commit_value
        metrics.update(commit=commit_value * n, n_q=out.n_q * n, **{k: v * n for k, v in values.items()})
        return LossOutput(torch.tensor(reported * n, dtype=torch.float64), metrics, per_optimizer)

    # ------------------------------------------------------------------ state
    def register_extra_state(self, extra: StateRegistry) -> None:
        """The balancers' moving averages (one balancer per loss set, created on first use)."""
        extra.register_value("balancers", self._balancer_states, self._load_balancer_states)

    def _balancer_states(self) -> dict:
        return {str(k): b.state_dict() for k, b in self.balancers.items()}

    def _load_balancer_states(self, states: dict) -> None:
        for key, value in (states or {}).items():
            self._balancer(key == "True").load_state_dict(value)

    # ------------------------------------------------------------------ evaluate / generate
    def _check_clips(self):
        if not hasattr(self, "_clips"):
            from tunesmith.eval.codec import select_clips

            mc, cc = self.cfg.model, self.cfg.check
            self._clips = select_clips(
                self.data_dir, cc.num_samples, mc.sample_rate, mc.channels, "valid", cc.max_seconds
            )
        return self._clips

    def evaluate(self, model: nn.Module, epoch: int) -> dict[str, float]:
        """The codec check on fixed valid segments: mean SI-SNR (dB), mel distance, L1, MSE, and each
        codebook's code perplexity (``code_ppl_qK``: bins when codes are used evenly, 1 when collapsed)."""
        from tunesmith.eval.codec import check_codec

        if self.cfg.check.num_samples <= 0:
            return {}
        report = check_codec(model, self._check_clips(), None, device=str(self.device))
        usage = {f"code_ppl_q{u.codebook}": u.perplexity for u in report.codebooks}  # collapse shows here
        return {**report.mean, **usage}

    def generate(self, model: nn.Module, epoch: int) -> None:
        """Original/reconstructed wav pairs and a report for the fixed valid segments in ``samples/epoch_NNNN``."""
        from tunesmith.eval.codec import check_codec

        if self.cfg.check.num_samples <= 0:
            return
        out = self.run.samples_dir / f"epoch_{epoch:04d}"
        check_codec(model, self._check_clips(), out, device=str(self.device))
        log.info("reconstructions written to %s", out)
