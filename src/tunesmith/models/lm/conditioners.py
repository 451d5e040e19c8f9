"""Conditioners: text (built-in encoder or frozen T5) and attributes → one condition sequence.

A *condition* is a plain dict per item, as found in a segment's sidecar: ``{"description": "...",
"genre": "rock", "bpm": 120, "key": "C major", "instrument": "piano"}``; a missing or empty field is
null. :class:`Conditioner` turns a list of them into :class:`ConditionTensors` ``[B, S, D]`` with a
mask: slot 0 holds a learned null embedding that is attended only by rows with no condition at all
(dropped for classifier-free guidance, or unconditional), so no row ever attends to nothing and
attention never sees an all-masked row. The null embedding starts at zero, which makes a null row's
cross-attention output exactly zero at initialisation (AudioCraft's behaviour).

Vocabularies (text tokenizer, attribute values) are built from the dataset and stored in the
weights as uint8 JSON buffers, so a checkpoint always carries them.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from tunesmith.config import ConfigError
from tunesmith.errors import UserError
from tunesmith.models.lm.text_tokenizer import PAD, UNK, TextTokenizer, vocab_from_tensor, vocab_to_tensor
from tunesmith.models.transformer import sinusoidal_embedding

ATTRIBUTES = ("genre", "bpm", "key", "instrument")
CHROMA = "chroma"  # condition field: float [frames, chroma_bins] (tunesmith.audio.chroma.chroma_features)


@dataclass
class ConditionerConfig:
    """What conditions the LM and how."""

    text: Literal["builtin", "t5", "none"] = "builtin"
    text_field: str = "description"  # sidecar field read as text ("transcript" for TTS)
    tokenizer: Literal["word", "char"] = "word"  # built-in encoder's tokenizer, built from the dataset
    vocab_size: int = 2000  # most frequent tokens kept
    text_max_len: int = 64  # tokens; longer texts are cut
    text_dim: int = 0  # built-in encoder width; 0 → the LM's dim
    text_layers: int = 2  # 0 = a lookup table (token embeddings + positions, no encoder)
    text_heads: int = 4
    t5_path: str = ""  # local directory of a T5 (encoder) checkpoint + tokenizer, for text=t5
    attributes: list[str] = dataclasses.field(default_factory=list)  # any of genre, bpm, key, instrument
    attribute_vocab_size: int = 128  # per attribute, most frequent values kept
    attribute_max_tokens: int = 4  # values kept per attribute (e.g. a list of instruments)
    bpm_edges: list[float] = dataclasses.field(default_factory=lambda: [70.0, 90.0, 110.0, 130.0, 150.0])
    fuse: Literal["cross", "prefix"] = "cross"  # prefix: the condition sequence, at its full fixed length, leads
    cfg_dropout: float = 0.3  # per sample: all conditions dropped (→ null) with this probability
    attribute_dropout: float = 0.0  # per sample and attribute, among samples that keep their conditions
    # melody (MusicGen-melody): a one-hot chroma [frames, chroma_bins] in the condition's "chroma" field
    chroma: bool = False  # needs fuse=prefix; the prefix is MusicGen-melody's (see Conditioner)
    chroma_bins: int = 12
    chroma_length: int = 235  # prefix frames: a shorter chroma is tiled, a longer one cut (MusicGen: 235 ≈ 30 s)
    chroma_dropout: float = 0.2  # per sample, among samples that keep their conditions: melody dropped (→ null)
    chroma_sample_rate: int = 32000  # chroma analysis (tunesmith.audio.chroma): audio resampled to this rate,
    chroma_n_fft: int = 16384  # STFT size and
    chroma_hop: int = 4096  # hop, in samples (MusicGen-melody's: 7.8 chroma frames per second)

    def __post_init__(self) -> None:
        bad = [a for a in self.attributes if a not in ATTRIBUTES]
        if bad:
            raise ConfigError(f"model.conditioner.attributes: unknown {bad}; choose from {list(ATTRIBUTES)}")
        if self.chroma and self.fuse != "prefix":
            raise ConfigError("model.conditioner.chroma=true needs model.conditioner.fuse=prefix (MusicGen-melody)")
        if self.chroma and (self.chroma_bins < 1 or self.chroma_length < 1):
            raise ConfigError("model.conditioner.chroma_bins and chroma_length must be positive")

    @property
    def enabled(self) -> bool:
        return self.text != "none" or bool(self.attributes) or self.chroma


@dataclass
class ConditionTensors:
    """Condition sequence ``embeddings`` [B, S, D] and ``mask`` Bool[B, S] (True = attend)."""

    embeddings: Tensor
    mask: Tensor

    def __len__(self) -> int:
        return self.embeddings.shape[0]

    @staticmethod
    def cat(parts: list[ConditionTensors]) -> ConditionTensors:
        """Stack along the batch, padding the sequence dimension with masked zeros."""
        length = max(p.embeddings.shape[1] for p in parts)
        embs, masks = [], []
        for p in parts:
            pad = length - p.embeddings.shape[1]
            embs.append(nn.functional.pad(p.embeddings, (0, 0, 0, pad)))
            masks.append(nn.functional.pad(p.mask, (0, pad), value=False))
        return ConditionTensors(torch.cat(embs), torch.cat(masks))


# --------------------------------------------------------------------------- condition values


def text_of(condition: dict, field: str) -> str:
    value = condition.get(field)
    if isinstance(value, (list, tuple)):
        value = ", ".join(str(v) for v in value)
    return "" if value is None else str(value).strip()


def attribute_tokens(condition: dict, name: str, bpm_edges: list[float]) -> list[str]:
    """A condition's value for one attribute as tokens (lower-cased strings; bpm → its bucket label)."""
    value = condition.get(name)
    if value is None or value == "" or value == []:
        return []
    if name == "bpm":
        try:
            bpm = float(value[0] if isinstance(value, (list, tuple)) else value)
        except (TypeError, ValueError):
            return []
        return [bpm_bucket(bpm, bpm_edges)] if math.isfinite(bpm) and bpm > 0 else []
    values = value if isinstance(value, (list, tuple)) else [value]
    return [str(v).strip().lower() for v in values if str(v).strip()]


def bpm_bucket(bpm: float, edges: list[float]) -> str:
    i = bisect.bisect_right(edges, bpm)
    lo = f"{edges[i - 1]:g}" if i > 0 else ""
    hi = f"{edges[i]:g}" if i < len(edges) else ""
    return f"bpm:{lo}-{hi}"


def bpm_vocab(edges: list[float]) -> list[str]:
    return [bpm_bucket(e - 1e-3, edges) for e in edges] + [bpm_bucket(edges[-1], edges)] if edges else ["bpm:-"]


def drop_conditions(condition: dict, cfg: ConditionerConfig, generator: torch.Generator, training: bool = True) -> dict:
    """Per-sample CFG dropout (→ {}) and attribute dropout, drawn from ``generator``."""
    if not training:
        return condition
    draws = torch.rand(1 + len(cfg.attributes) + int(cfg.chroma), generator=generator).tolist()
    if draws[0] < cfg.cfg_dropout:
        return {}
    kept = dict(condition)
    for name, draw in zip(cfg.attributes, draws[1 : 1 + len(cfg.attributes)], strict=True):
        if draw < cfg.attribute_dropout:
            kept.pop(name, None)
    if cfg.chroma and draws[-1] < cfg.chroma_dropout:
        kept.pop(CHROMA, None)
    return kept


def chroma_settings(cfg: ConditionerConfig) -> Any:
    """The :class:`~tunesmith.audio.chroma.ChromaSettings` of a melody conditioner's analysis."""
    from tunesmith.audio.chroma import ChromaSettings

    return ChromaSettings(cfg.chroma_sample_rate, cfg.chroma_n_fft, cfg.chroma_hop, cfg.chroma_bins)


def vocabularies_from_state(state: dict[str, Tensor], cfg: ConditionerConfig, prefix: str) -> dict[str, Any]:
    """The vocabularies stored in a state dict (``prefix`` = the conditioner's, e.g. ``"conditioner."``)."""
    vocabs: dict[str, Any] = {}
    if cfg.text == "builtin":
        key = f"{prefix}text.vocab.data"
        if key not in state:
            raise UserError(f"the weights have no text vocabulary ({key}); were they saved with text=builtin?")
        vocabs["text"] = TextTokenizer.from_tensor(state[key])
    for name in cfg.attributes:
        key = f"{prefix}attributes.{name}.vocab.data"
        if key not in state:
            raise UserError(f"the weights have no vocabulary for attribute {name!r} ({key})")
        vocabs[name] = vocab_from_tensor(state[key])["vocab"]
    return vocabs


def build_vocabularies(conditions: list[dict], cfg: ConditionerConfig) -> dict[str, Any]:
    """Text tokenizer and attribute vocabularies from a dataset's conditions (training split)."""
    vocabs: dict[str, Any] = {}
    if cfg.text == "builtin":
        vocabs["text"] = TextTokenizer.build(
            (text_of(c, cfg.text_field) for c in conditions), cfg.tokenizer, cfg.vocab_size
        )
    for name in cfg.attributes:
        if name == "bpm":
            vocabs[name] = ["<pad>", "<unk>"] + bpm_vocab(cfg.bpm_edges)
            continue
        counts: dict[str, int] = {}
        for c in conditions:
            for tok in attribute_tokens(c, name, cfg.bpm_edges):
                counts[tok] = counts.get(tok, 0) + 1
        ranked = sorted(counts, key=lambda t: (-counts[t], t))[: cfg.attribute_vocab_size]
        vocabs[name] = ["<pad>", "<unk>"] + ranked
    return vocabs


# --------------------------------------------------------------------------- modules


class VocabBuffer(nn.Module):
    """Holds a JSON vocabulary as a uint8 buffer ``data`` whose length adapts when weights are loaded."""

    def __init__(self, obj: dict) -> None:
        super().__init__()
        self.register_buffer("data", vocab_to_tensor(obj))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001
        key = prefix + "data"
        if key in state_dict:
            self.data = torch.empty_like(state_dict[key])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def get(self) -> dict:
        return vocab_from_tensor(self.data)


class BuiltinTextEncoder(nn.Module):
    """Token embeddings + sinusoidal positions + a bidirectional pre-norm transformer encoder.

    ids Long[B, L], mask Bool[B, L] → [B, L, out_dim].
    """

    def __init__(self, tokenizer: TextTokenizer, cfg: ConditionerConfig, out_dim: int) -> None:
        super().__init__()
        width = cfg.text_dim or out_dim
        if width % cfg.text_heads:
            raise ValueError(f"model.conditioner.text_dim={width} is not divisible by text_heads={cfg.text_heads}")
        self.tokenizer = tokenizer
        self.max_len = cfg.text_max_len
        self.vocab = VocabBuffer({"kind": tokenizer.kind, "vocab": tokenizer.vocab})
        self.embed = nn.Embedding(len(tokenizer), width)
        layer = nn.TransformerEncoderLayer(
            width, cfg.text_heads, 4 * width, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        # text_layers=0: a plain lookup table (AudioCraft's LUT conditioner), positions and projection only
        self.encoder = (
            nn.TransformerEncoder(layer, cfg.text_layers, enable_nested_tensor=False) if cfg.text_layers else None
        )
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Linear(width, out_dim)
        self.register_buffer("positions", sinusoidal_embedding(torch.arange(self.max_len), width), persistent=False)
        nn.init.normal_(self.embed.weight, std=0.02)

    def forward(self, texts: list[str], fixed_length: bool = False) -> tuple[Tensor, Tensor]:
        ids, mask = self.tokenizer.batch(texts, self.max_len)
        if fixed_length:
            ids = nn.functional.pad(ids, (0, self.max_len - ids.shape[1]), value=PAD)
            mask = ids != PAD
        ids, mask = ids.to(self.embed.weight.device), mask.to(self.embed.weight.device)
        x = self.embed(ids) + self.positions[: ids.shape[1]].to(self.embed.weight.dtype)
        # a row of padding only (empty text) would make softmax NaN: let it see its first slot, masked later
        key_padding = ~mask
        key_padding[:, 0] &= mask.any(dim=1)
        if self.encoder is not None:
            x = self.encoder(x, src_key_padding_mask=key_padding)
        return self.proj(self.norm(x)), mask


class T5TextEncoder(nn.Module):
    """A frozen T5 encoder from a local directory, plus a trained projection to the LM's width.

    The T5 weights are not part of this module's parameters or state dict (they stay in
    ``t5_path``); only ``proj`` is trained and saved.
    """

    def __init__(self, cfg: ConditionerConfig, out_dim: int) -> None:
        super().__init__()
        if not cfg.t5_path:
            raise UserError("model.conditioner.text=t5 needs model.conditioner.t5_path=DIR (a local T5 checkpoint)")
        path = Path(cfg.t5_path).expanduser()
        if not path.is_dir():
            raise UserError(f"model.conditioner.t5_path={cfg.t5_path}: not a directory (a local T5 checkpoint)")
        try:
            from transformers import AutoTokenizer, T5EncoderModel
        except ImportError as err:  # pragma: no cover - depends on the install
            raise UserError("text=t5 needs transformers: pip install 'tunesmith[hf]'") from err
        try:
            t5 = T5EncoderModel.from_pretrained(str(path)).eval()
            self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        except (OSError, ValueError) as err:
            raise UserError(f"model.conditioner.t5_path={path}: cannot load a T5 encoder and tokenizer: {err}") from err
        t5.requires_grad_(False)
        self._frozen = [t5]  # a list keeps it out of parameters() and state_dict()
        self.max_len = cfg.text_max_len
        self.proj = nn.Linear(t5.config.d_model, out_dim)

    @property
    def t5(self) -> nn.Module:
        return self._frozen[0]

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001 - follow .to()/.half() onto the frozen T5
        super()._apply(fn, recurse)
        self._frozen[0] = self._frozen[0]._apply(fn)
        return self

    def forward(self, texts: list[str], fixed_length: bool = False) -> tuple[Tensor, Tensor]:
        batch = self.tokenizer(
            [t or "" for t in texts],
            return_tensors="pt",
            padding="max_length" if fixed_length else True,
            truncation=True,
            max_length=self.max_len,
        )
        device = self.proj.weight.device
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device).bool()
        mask &= torch.tensor([bool(t) for t in texts], device=device)[:, None]  # empty text → null
        with torch.no_grad():
            states = self.t5(input_ids=ids, attention_mask=batch["attention_mask"].to(device)).last_hidden_state
        return self.proj(states.to(self.proj.weight.dtype)), mask


class AttributeEmbedding(nn.Module):
    """Attribute tokens → one embedding each: conditions → [B, A, D] and mask Bool[B, A] (A ≥ 1)."""

    def __init__(self, name: str, vocab: list[str], dim: int, bpm_edges: list[float], max_tokens: int) -> None:
        super().__init__()
        self.name = name
        self.max_tokens = max_tokens
        self.bpm_edges = bpm_edges
        self.vocab = VocabBuffer({"vocab": vocab})
        self.index = {tok: i for i, tok in enumerate(vocab)}
        self.embed = nn.Embedding(len(vocab), dim)
        nn.init.normal_(self.embed.weight, std=0.02)

    def forward(self, conditions: list[dict], fixed_length: bool = False) -> tuple[Tensor, Tensor]:
        tokens = [
            [self.index.get(t, UNK) for t in attribute_tokens(c, self.name, self.bpm_edges)][: self.max_tokens]
            for c in conditions
        ]
        length = self.max_tokens if fixed_length else max([len(t) for t in tokens] + [1])
        ids = torch.full((len(conditions), length), PAD, dtype=torch.long)
        for i, t in enumerate(tokens):
            ids[i, : len(t)] = torch.tensor(t, dtype=torch.long)
        ids = ids.to(self.embed.weight.device)
        return self.embed(ids), ids != PAD


class ChromaConditioner(nn.Module):
    """Melody chroma → the MusicGen-melody prefix: conditions → [B, chroma_length, D].

    Each condition's ``chroma`` float [frames, bins] (absent = the null melody: bin 0 one-hot, as transformers
    and AudioCraft use for unconditional rows) is tiled to ``chroma_length`` frames, cut there, and projected
    by ``proj`` (bins → D, with bias).
    """

    def __init__(self, cfg: ConditionerConfig, dim: int) -> None:
        super().__init__()
        self.bins, self.length = cfg.chroma_bins, cfg.chroma_length
        self.proj = nn.Linear(cfg.chroma_bins, dim)

    def frames(self, condition: dict) -> Tensor:
        """A condition's chroma as float [chroma_length, bins] (tiled and cut)."""
        value = condition.get(CHROMA)
        if value is None:
            chroma = torch.zeros(1, self.bins)
            chroma[:, 0] = 1.0
        else:
            chroma = torch.as_tensor(value, dtype=torch.float32)
            if chroma.dim() != 2 or chroma.shape[1] != self.bins or chroma.shape[0] == 0:
                raise UserError(f"a melody chroma must be [frames, {self.bins}], got {list(chroma.shape)}")
        repeats = -(-self.length // chroma.shape[0])
        return chroma.repeat(repeats, 1)[: self.length]

    def forward(self, conditions: list[dict]) -> Tensor:
        chroma = torch.stack([self.frames(c) for c in conditions]).to(self.proj.weight)
        return self.proj(chroma)


class Conditioner(nn.Module):
    """Conditions (list of dicts) → :class:`ConditionTensors` [B, 1 + S, D] (slot 0 = null).

    With ``chroma`` (MusicGen-melody) the sequence is instead transformers' ``MusicgenMelody`` prefix, all of it
    attended: [chroma (chroma_length), text states × text mask (padded to the batch's longest text), attributes
    × mask]; a null row has the null melody and zero text states (no null slot).
    """

    def __init__(self, cfg: ConditionerConfig, dim: int, vocabs: dict[str, Any]) -> None:
        super().__init__()
        self.cfg = cfg
        self.null = nn.Parameter(torch.zeros(dim))
        self.text: nn.Module | None = None
        if cfg.text == "builtin":
            if "text" not in vocabs:
                raise ValueError("the built-in text encoder needs a tokenizer built from the dataset (vocabs['text'])")
            self.text = BuiltinTextEncoder(vocabs["text"], cfg, dim)
        elif cfg.text == "t5":
            self.text = T5TextEncoder(cfg, dim)
        self.attributes = nn.ModuleDict(
            {
                name: AttributeEmbedding(name, vocabs[name], dim, cfg.bpm_edges, cfg.attribute_max_tokens)
                for name in cfg.attributes
            }
        )
        self.chroma = ChromaConditioner(cfg, dim) if cfg.chroma else None

    def forward(self, conditions: list[dict], fixed_length: bool = False) -> ConditionTensors:
        """``fixed_length``: pad every part to its maximum (text_max_len, attribute_max_tokens), so the
        sequence length never depends on the batch (needed when conditions are a prefix)."""
        if self.chroma is not None:
            return self._melody_prefix(conditions)
        b = len(conditions)
        embs = [self.null.expand(b, 1, -1)]
        masks = []
        if self.text is not None:
            e, m = self.text([text_of(c, self.cfg.text_field) for c in conditions], fixed_length)
            embs.append(e)
            masks.append(m)
        for module in self.attributes.values():
            e, m = module(conditions, fixed_length)
            embs.append(e)
            masks.append(m)
        device = self.null.device
        rest = torch.cat(masks, dim=1) if masks else torch.zeros(b, 0, dtype=torch.bool, device=device)
        mask = torch.cat([~rest.any(dim=1, keepdim=True), rest], dim=1)
        x = torch.cat([e.to(self.null.dtype) for e in embs], dim=1)
        x = torch.where(mask[..., None], x, self.null)  # masked slots hold the null embedding (prefix fusion)
        return ConditionTensors(x, mask)

    def _melody_prefix(self, conditions: list[dict]) -> ConditionTensors:
        """MusicGen-melody's prefix [B, chroma_length + L_text + L_attr, D], every slot attended."""
        parts = [self.chroma(conditions)] if self.chroma is not None else []
        if self.text is not None:
            e, m = self.text([text_of(c, self.cfg.text_field) for c in conditions], False)
            parts.append(e * m[..., None].to(e.dtype))
        for module in self.attributes.values():
            e, m = module(conditions, False)
            parts.append(e * m[..., None].to(e.dtype))
        x = torch.cat([p.to(self.null.dtype) for p in parts], dim=1)
        return ConditionTensors(x, torch.ones(x.shape[:2], dtype=torch.bool, device=x.device))
