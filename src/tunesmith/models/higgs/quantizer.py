"""Residual vector quantizer of the HiggsAudio v2 tokenizer (inference: nearest code by Euclidean distance).

Each stage projects the residual ``[B, D, F]`` down to ``codebook_dim``, picks the nearest of
``codebook_size`` codes, projects the code back up to ``D`` and subtracts it. Names follow transformers'
``quantizer.quantizers.{i}.{project_in,project_out,codebook.embed}``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Codebook(nn.Module):
    """``embed [codebook_size, codebook_dim]`` (a buffer: the released weights are EMA-trained, not learned)."""

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.embed = nn.Buffer(torch.zeros(size, dim))

    def nearest(self, x: Tensor) -> Tensor:
        """``x [N, dim]`` → indices ``[N]`` of the closest codes (squared distance, first index on ties)."""
        e = self.embed
        dist = x.pow(2).sum(1, keepdim=True) - 2 * x @ e.t() + e.pow(2).sum(1)[None, :]
        return (-dist).max(dim=-1).indices


class Stage(nn.Module):
    """One RVQ stage: ``project_in`` (D → dim), codebook, ``project_out`` (dim → D)."""

    def __init__(self, hidden: int, size: int, dim: int) -> None:
        super().__init__()
        self.codebook = Codebook(size, dim)
        self.project_in = nn.Linear(hidden, dim)
        self.project_out = nn.Linear(dim, hidden)

    def encode(self, x: Tensor) -> Tensor:
        """``x [B, D, F]`` → codes ``[B, F]``."""
        z = self.project_in(x.transpose(1, 2))
        return self.codebook.nearest(z.reshape(-1, z.shape[-1])).view(z.shape[:-1])

    def decode(self, codes: Tensor) -> Tensor:
        """codes ``[B, F]`` → ``[B, D, F]``."""
        return self.project_out(F.embedding(codes, self.codebook.embed)).transpose(1, 2)


class ResidualQuantizer(nn.Module):
    """``n`` stages; ``encode`` uses the first ``n_q``, ``decode`` as many as the codes carry."""

    def __init__(self, n: int, hidden: int, size: int, dim: int) -> None:
        super().__init__()
        self.quantizers = nn.ModuleList(Stage(hidden, size, dim) for _ in range(n))

    def encode(self, x: Tensor, n_q: int) -> Tensor:
        """``x [B, D, F]`` → codes ``[B, n_q, F]`` long."""
        residual, codes = x, []
        for stage in self.quantizers[:n_q]:
            idx = stage.encode(residual)
            residual = residual - stage.decode(idx)
            codes.append(idx)
        return torch.stack(codes, dim=1)

    def decode(self, codes: Tensor) -> Tensor:
        """codes ``[B, K, F]`` (K ≤ stages) → summed embedding ``[B, D, F]``."""
        out = self.quantizers[0].decode(codes[:, 0])
        for k in range(1, codes.shape[1]):
            out = out + self.quantizers[k].decode(codes[:, k])
        return out
