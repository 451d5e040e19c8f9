"""Residual vector quantizer with EMA codebooks, k-means init, dead-code restart and quantizer dropout.

Each codebook holds ``bins`` vectors of size ``dim``. Codebooks are not trained by gradients: in
training mode every forward pass moves them towards the mean of the vectors assigned to them (an
exponential moving average of counts and sums, Laplace-smoothed), initialises them with k-means on the
first batch, and restarts any code whose smoothed usage falls below ``dead_code_threshold`` with a
vector drawn from the current batch. Under ``torch.distributed`` the statistics are summed over ranks
and random choices are broadcast from rank 0, so every rank keeps identical codebooks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_reduce_sum(t: Tensor) -> Tensor:
    if _distributed():
        dist.all_reduce(t)
    return t


def _broadcast(t: Tensor) -> Tensor:
    if _distributed():
        dist.broadcast(t, 0)
    return t


def _sample_rows(x: Tensor, n: int) -> Tensor:
    """``n`` rows of ``x`` ``[N, D]`` drawn at random (with replacement only when ``N < n``)."""
    if x.shape[0] >= n:
        idx = torch.randperm(x.shape[0], device=x.device)[:n]
    else:
        idx = torch.randint(0, x.shape[0], (n,), device=x.device)
    return x[idx]


def kmeans(x: Tensor, k: int, iters: int) -> tuple[Tensor, Tensor]:
    """Lloyd's k-means on ``x`` ``[N, D]`` → (centroids ``[k, D]``, sizes ``[k]``); empty clusters keep their seed."""
    centroids = _sample_rows(x, k).clone()
    counts = torch.zeros(k, device=x.device, dtype=x.dtype)
    for _ in range(iters):
        idx = nearest(x, centroids)
        counts = torch.bincount(idx, minlength=k).to(x.dtype)
        sums = torch.zeros_like(centroids).index_add_(0, idx, x)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None]
    return centroids, counts


def nearest(x: Tensor, codebook: Tensor) -> Tensor:
    """Index of the closest (Euclidean) codebook row for every row of ``x``: ``[N, D]``, ``[K, D]`` → ``[N]`` long."""
    # |x - e|^2 = |x|^2 - 2 x.e + |e|^2; |x|^2 does not change the argmin
    scores = torch.addmm(codebook.pow(2).sum(1), x, codebook.t(), beta=1.0, alpha=-2.0)
    return scores.argmin(dim=1)


class EMACodebook(nn.Module):
    """One codebook of ``bins`` vectors of size ``dim``, updated by exponential moving averages."""

    def __init__(
        self,
        dim: int,
        bins: int,
        decay: float = 0.99,
        epsilon: float = 1e-5,
        kmeans_init: bool = True,
        kmeans_iters: int = 50,
        dead_code_threshold: float = 2.0,
    ) -> None:
        super().__init__()
        self.dim, self.bins = dim, bins
        self.decay, self.epsilon = decay, epsilon
        self.kmeans_iters = kmeans_iters
        self.dead_code_threshold = dead_code_threshold
        embed = torch.empty(bins, dim)
        nn.init.kaiming_uniform_(embed)
        self.register_buffer("initialized", torch.tensor(not kmeans_init))
        self.register_buffer("cluster_size", torch.ones(bins))
        self.register_buffer("embed", embed)
        self.register_buffer("embed_avg", embed.clone())

    def encode(self, x: Tensor) -> Tensor:
        """``[N, dim]`` → codes ``[N]`` long."""
        return nearest(x.float(), self.embed)

    def decode(self, codes: Tensor) -> Tensor:
        """Codes ``[...]`` → vectors ``[..., dim]``."""
        return F.embedding(codes, self.embed)

    @torch.no_grad()
    def _init_kmeans(self, x: Tensor) -> None:
        centroids, counts = kmeans(x, self.bins, self.kmeans_iters)
        centroids, counts = _broadcast(centroids), _broadcast(counts)
        self.embed.copy_(centroids)
        self.embed_avg.copy_(centroids * counts.clamp_min(1)[:, None])
        self.cluster_size.copy_(counts.clamp_min(1))
        self.initialized.fill_(True)

    @torch.no_grad()
    def _restart_dead_codes(self, x: Tensor) -> int:
        dead = self.cluster_size < self.dead_code_threshold
        n_dead = int(dead.sum())
        if n_dead == 0:
            return 0
        fresh = _broadcast(_sample_rows(x, n_dead).contiguous())
        self.embed[dead] = fresh
        self.embed_avg[dead] = fresh * self.dead_code_threshold
        self.cluster_size[dead] = self.dead_code_threshold
        return n_dead

    @torch.no_grad()
    def update(self, x: Tensor, codes: Tensor) -> int:
        """EMA step from vectors ``x`` ``[N, dim]`` assigned to ``codes`` ``[N]``; returns how many codes restarted."""
        counts = torch.bincount(codes, minlength=self.bins).to(x.dtype)
        sums = torch.zeros(self.bins, self.dim, dtype=x.dtype, device=x.device).index_add_(0, codes, x)
        _all_reduce_sum(counts)
        _all_reduce_sum(sums)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_avg.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.epsilon) / (total + self.bins * self.epsilon) * total
        self.embed.copy_(self.embed_avg / smoothed[:, None])
        return self._restart_dead_codes(x) if self.dead_code_threshold > 0 else 0

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``[N, dim]`` → (quantized ``[N, dim]``, codes ``[N]``); updates the codebook in training mode."""
        xf = x.detach().float()
        if self.training and not bool(self.initialized):
            self._init_kmeans(xf)
        codes = nearest(xf, self.embed)
        quantized = self.decode(codes)
        if self.training:
            self.update(xf, codes)
        return quantized.to(x.dtype), codes


@dataclass
class QuantizerOutput:
    """``quantized`` ``[B, dim, F]`` (straight-through), ``codes`` ``[B, n_q, F]`` long, ``commit_loss`` scalar."""

    quantized: Tensor
    codes: Tensor
    commit_loss: Tensor
    n_q: int


class ResidualVectorQuantizer(nn.Module):
    """``n_q`` codebooks applied in turn to the residual of the previous ones.

    With ``q_dropout`` on, each training batch uses a random number of codebooks in ``[1, n_q]`` so the
    same model works at every bandwidth.
    """

    def __init__(
        self,
        dim: int,
        n_q: int = 8,
        bins: int = 1024,
        decay: float = 0.99,
        kmeans_init: bool = True,
        kmeans_iters: int = 50,
        dead_code_threshold: float = 2.0,
        q_dropout: bool = False,
    ) -> None:
        super().__init__()
        self.dim, self.n_q, self.bins = dim, n_q, bins
        self.q_dropout = q_dropout
        self.layers = nn.ModuleList(
            EMACodebook(
                dim,
                bins,
                decay,
                kmeans_init=kmeans_init,
                kmeans_iters=kmeans_iters,
                dead_code_threshold=dead_code_threshold,
            )
            for _ in range(n_q)
        )

    def _check_n_q(self, n_q: int | None) -> int:
        n_q = self.n_q if n_q is None else n_q
        if not 1 <= n_q <= self.n_q:
            raise ValueError(f"n_q={n_q}: this quantizer has codebooks 1..{self.n_q}")
        return n_q

    def forward(self, x: Tensor, n_q: int | None = None) -> QuantizerOutput:
        """Latent ``[B, dim, F]`` → :class:`QuantizerOutput`; ``n_q`` codebooks (random in training with dropout)."""
        n_q = self._check_n_q(n_q)
        if self.training and self.q_dropout:
            n = torch.randint(1, n_q + 1, (1,))
            n_q = int(_broadcast(n)[0])
        b, d, f = x.shape
        flat = x.transpose(1, 2).reshape(-1, d)  # [B*F, dim]
        residual = flat
        total = torch.zeros_like(flat)
        codes, losses = [], []
        for layer in self.layers[:n_q]:
            quantized, idx = layer(residual)
            losses.append(F.mse_loss(residual, quantized.detach()))
            residual = residual - quantized.detach()
            total = total + quantized.detach()
            codes.append(idx)
        out = flat + (total - flat).detach()  # straight-through estimator
        return QuantizerOutput(
            quantized=out.reshape(b, f, d).transpose(1, 2),
            codes=torch.stack(codes, 0).reshape(n_q, b, f).transpose(0, 1),
            commit_loss=torch.stack(losses).mean(),
            n_q=n_q,
        )

    @torch.no_grad()
    def encode(self, x: Tensor, n_q: int | None = None) -> Tensor:
        """Latent ``[B, dim, F]`` → codes ``[B, n_q, F]`` long (never updates the codebooks)."""
        n_q = self._check_n_q(n_q)
        b, d, f = x.shape
        residual = x.transpose(1, 2).reshape(-1, d).float()
        codes = []
        for layer in self.layers[:n_q]:
            idx = layer.encode(residual)
            residual = residual - layer.decode(idx)
            codes.append(idx)
        return torch.stack(codes, 0).reshape(n_q, b, f).transpose(0, 1)

    def decode(self, codes: Tensor) -> Tensor:
        """Codes ``[B, K, F]`` (``K <= n_q``) → latent ``[B, dim, F]``."""
        if codes.dim() != 3 or not 1 <= codes.shape[1] <= self.n_q:
            raise ValueError(f"codes must be [B, K, F] with 1 <= K <= {self.n_q}, got {tuple(codes.shape)}")
        if codes.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise ValueError(f"codes must be integers, got {codes.dtype}")
        codes = codes.long()
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.bins):
            raise ValueError(f"codes must lie in [0, {self.bins}), got [{int(codes.min())}, {int(codes.max())}]")
        out = sum(layer.decode(codes[:, k]) for k, layer in enumerate(self.layers[: codes.shape[1]]))
        return out.transpose(1, 2)

    def bandwidth(self, n_q: int, frame_rate: float) -> float:
        """kbps of ``n_q`` codebooks at ``frame_rate`` frames per second."""
        return n_q * math.log2(self.bins) * frame_rate / 1000.0
