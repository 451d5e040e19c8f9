"""Hugging Face MusicGen decoder ⇄ tunesmith LM: configs and weights, tensor for tensor.

transformers' ``MusicgenDecoder`` is tunesmith's :class:`~tunesmith.models.lm.model.LMModel` with
``positional="sinusoidal"``, ``bias=False``, LayerNorm with bias, cross-attention to T5 and the delay
pattern. Names in a ``MusicgenForConditionalGeneration`` state dict (prefix ``P = decoder.model.decoder.``,
layer ``i``, codebook ``k``) and where they go:

    P.embed_tokens.k.weight [card+1, D]          embed.weight rows k·(card+1) … (k+1)·(card+1)
    P.layers.i.self_attn.{q,k,v}_proj.weight      transformer.layers.i.self_attn.qkv.weight = cat(q, k, v)
    P.layers.i.self_attn.out_proj.weight          transformer.layers.i.self_attn.out.weight
    P.layers.i.self_attn_layer_norm.*             transformer.layers.i.norm_self.*
    P.layers.i.encoder_attn.q_proj.weight         transformer.layers.i.cross_attn.q.weight
    P.layers.i.encoder_attn.{k,v}_proj.weight     transformer.layers.i.cross_attn.kv.weight = cat(k, v)
    P.layers.i.encoder_attn.out_proj.weight       transformer.layers.i.cross_attn.out.weight
    P.layers.i.encoder_attn_layer_norm.*          transformer.layers.i.norm_cross.*
    P.layers.i.fc1.weight, fc2.weight             transformer.layers.i.ffn.fc1.weight, ffn.fc2.weight
    P.layers.i.final_layer_norm.*                 transformer.layers.i.norm_ffn.*
    P.layer_norm.*                                transformer.norm.*
    decoder.lm_heads.k.weight [card, D]           heads[k]
    enc_to_dec_proj.{weight,bias}                 conditioner.text.proj.* (identity when T5 width = D)
    (none: a null condition is zero states)       conditioner.null = 0, kept frozen

transformers builds ``enc_to_dec_proj`` only when the T5 width differs from the decoder's; with equal
widths the projection is the identity, which tunesmith keeps frozen so the model stays exportable.

Stereo (decoder ``audio_channels=2``): the same tensors over 2·K interleaved codebooks; ``LMConfig.channels=2``
gives the pattern both codebooks of a level at one delay. MusicGen-melody (``model_type: musicgen_melody``):
no ``encoder_attn*`` tensors (the conditions are a prefix, ``conditioner.fuse=prefix``, ``chroma=true``), and

    audio_enc_to_dec_proj.{weight,bias}           conditioner.chroma.proj.* (identity when num_chroma = D)
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import torch
from torch import Tensor

from tunesmith.errors import UserError
from tunesmith.models.lm.model import LMConfig

log = logging.getLogger(__name__)

DECODER = "decoder.model.decoder."
HEADS = "decoder.lm_heads."
PROJ = "enc_to_dec_proj."
CHROMA_PROJ = "audio_enc_to_dec_proj."  # MusicGen-melody: chroma bins → decoder width (absent when equal)
MELODY = "musicgen_melody"
TEXT = "text_encoder."
AUDIO = "audio_encoder."

# transformers activation name → tunesmith's, and back
ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}
HF_ACTIVATIONS = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "relu": "relu"}

# LM config keys that describe the architecture: taken from the source when fine-tuning a MusicGen
ARCHITECTURE_KEYS = (
    "card",
    "num_codebooks",
    "pattern",
    "channels",
    "transformer.dim",
    "transformer.num_layers",
    "transformer.num_heads",
    "transformer.ffn_dim",
    "transformer.positional",
    "transformer.max_seq_len",
    "transformer.position_offset",
    "transformer.max_period",
    "transformer.cross_attention",
    "transformer.cross_dim",
    "transformer.norm",
    "transformer.norm_eps",
    "transformer.bias",
    "transformer.norm_bias",
    "transformer.activation",
    "transformer.final_norm",
    "conditioner.text",
    "conditioner.t5_path",
    "conditioner.attributes",
    "conditioner.fuse",
    "conditioner.chroma",
    "conditioner.chroma_bins",
    "conditioner.chroma_length",
    "conditioner.chroma_sample_rate",
    "conditioner.chroma_n_fft",
    "conditioner.chroma_hop",
)

# the tunesmith parameters a MusicGen does not have: they keep their imported values (frozen)
NOT_IN_MUSICGEN = ("conditioner.null",)


# --------------------------------------------------------------------------- configs


def _int(section: dict, key: str, where: str) -> int:
    value = section.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise UserError(f"{where}.{key}={value!r}: expected a positive integer")
    return value


def text_width(config: dict) -> int:
    """The T5 encoder's output width (``d_model``) of a MusicGen config."""
    text = config.get("text_encoder") or {}
    return _int(text, "d_model" if "d_model" in text else "hidden_size", "config.json text_encoder")


def is_melody(config: dict) -> bool:
    """Whether a config.json is a MusicGen-melody's (chroma prefix, no cross-attention)."""
    return config.get("model_type") == MELODY


def has_chroma_projection(config: dict) -> bool:
    """Whether transformers builds ``audio_enc_to_dec_proj`` (MusicGen-melody with num_chroma ≠ width)."""
    return is_melody(config) and int(config.get("num_chroma", 12)) != config["decoder"]["hidden_size"]


def has_projection(config: dict) -> bool:
    """Whether transformers builds ``enc_to_dec_proj`` for this MusicGen config."""
    decoder = config["decoder"]
    return text_width(config) != decoder["hidden_size"] and decoder.get("cross_attention_hidden_size") is None


def lm_config_from_hf(
    config: dict, t5_path: str = "", base: LMConfig | None = None, chroma_analysis: dict | None = None
) -> LMConfig:
    """The tunesmith LM config of a MusicGen or MusicGen-melody ``config.json`` (a dict, already verified).

    Architecture keys come from ``config``; training settings (dropout, CFG dropout, text field and
    length) from ``base`` (tunesmith's defaults when None). ``chroma_analysis``: a melody processor's
    ``preprocessor_config.json`` (sampling_rate, n_fft, hop_length), else MusicGen-melody's defaults.
    """
    melody = is_melody(config)
    base = base or LMConfig()
    decoder = config["decoder"]
    where = "config.json decoder"
    activation = decoder.get("activation_function", "gelu")
    if activation not in ACTIVATIONS:
        raise UserError(f"{where}.activation_function={activation!r}: supported are {sorted(ACTIVATIONS)}")
    transformer = dataclasses.replace(
        base.transformer,
        dim=_int(decoder, "hidden_size", where),
        num_layers=_int(decoder, "num_hidden_layers", where),
        num_heads=_int(decoder, "num_attention_heads", where),
        ffn_dim=_int(decoder, "ffn_dim", where),
        positional="sinusoidal",
        max_seq_len=int(decoder.get("max_position_embeddings") or base.transformer.max_seq_len),
        position_offset=0,
        max_period=10000.0,
        cross_attention=not melody,
        cross_dim=0,
        norm="layernorm",
        norm_eps=1e-5,
        bias=False,
        norm_bias=True,
        activation=ACTIVATIONS[activation],
        final_norm=True,
    )
    conditioner = dataclasses.replace(
        base.conditioner, text="t5", t5_path=t5_path, attributes=[], fuse="prefix" if melody else "cross", chroma=melody
    )
    if melody:
        analysis = chroma_analysis or {}
        conditioner = dataclasses.replace(
            conditioner,
            chroma_bins=_int(config, "num_chroma", "config.json"),
            chroma_length=_int(config, "chroma_length", "config.json"),
            chroma_sample_rate=int(analysis.get("sampling_rate") or 32000),
            chroma_n_fft=int(analysis.get("n_fft") or 16384),
            chroma_hop=int(analysis.get("hop_length") or 4096),
        )
    return dataclasses.replace(
        base,
        card=_int(decoder, "vocab_size", where),
        num_codebooks=_int(decoder, "num_codebooks", where),
        pattern="delay",
        channels=int(decoder.get("audio_channels") or 1),
        transformer=transformer,
        conditioner=conditioner,
    )


def exportable_problems(cfg: LMConfig) -> list[str]:
    """Why an LM config cannot be written as a transformers MusicGen decoder (empty when it can)."""
    t, c = cfg.transformer, cfg.conditioner
    wanted: list[tuple[str, Any, Any]] = [
        ("model.pattern", cfg.pattern, "delay"),
        ("model.transformer.positional", t.positional, "sinusoidal"),
        ("model.transformer.position_offset", t.position_offset, 0),
        ("model.transformer.max_period", t.max_period, 10000.0),
        ("model.transformer.norm", t.norm, "layernorm"),
        ("model.transformer.norm_eps", t.norm_eps, 1e-5),
        ("model.transformer.bias", t.bias, False),
        ("model.transformer.norm_bias", t.norm_bias, True),
        ("model.transformer.final_norm", t.final_norm, True),
        ("model.conditioner.text", c.text, "t5"),
        ("model.conditioner.fuse", c.fuse, "prefix" if c.chroma else "cross"),
        ("model.conditioner.attributes", list(c.attributes), []),
    ]
    problems = [f"{key}={value!r}: a MusicGen needs {need!r}" for key, value, need in wanted if value != need]
    if cfg.channels not in (1, 2):
        problems.append(f"model.channels={cfg.channels}: a MusicGen is mono (1) or stereo (2)")
    if t.activation not in HF_ACTIVATIONS:
        need = sorted(HF_ACTIVATIONS)
        problems.append(f"model.transformer.activation={t.activation!r}: a MusicGen needs one of {need}")
    return problems


def hf_decoder_config(cfg: LMConfig, *, text_hidden: int) -> dict[str, Any]:
    """``MusicgenDecoderConfig`` keyword arguments for an LM config (pad/start token = ``card``)."""
    t = cfg.transformer
    return {
        "vocab_size": cfg.card,
        "num_codebooks": cfg.num_codebooks,
        "hidden_size": t.dim,
        "num_hidden_layers": t.num_layers,
        "num_attention_heads": t.num_heads,
        "ffn_dim": t.hidden_dim,
        "max_position_embeddings": t.max_seq_len,
        "activation_function": HF_ACTIVATIONS[t.activation],
        "dropout": t.dropout,
        "attention_dropout": t.dropout,  # tunesmith's one dropout also drops attention probabilities
        "activation_dropout": 0.0,
        "layerdrop": 0.0,
        "scale_embedding": False,
        "tie_word_embeddings": False,
        "audio_channels": cfg.channels,
        "pad_token_id": cfg.card,
        "bos_token_id": cfg.card,
        "decoder_start_token_id": cfg.card,
        **({} if cfg.conditioner.chroma else {"cross_attention_hidden_size": None}),
    }


# --------------------------------------------------------------------------- weights


def decoder_tensor_shapes(config: dict) -> dict[str, list[int]]:
    """Every decoder (and projection) tensor a MusicGen state dict must hold, with its shape."""
    d = config["decoder"]
    dim, ffn, card, k = d["hidden_size"], d["ffn_dim"], d["vocab_size"], d["num_codebooks"]
    shapes: dict[str, list[int]] = {}
    for q in range(k):
        shapes[f"{DECODER}embed_tokens.{q}.weight"] = [card + 1, dim]
        shapes[f"{HEADS}{q}.weight"] = [card, dim]
    melody = is_melody(config)
    for i in range(d["num_hidden_layers"]):
        layer = f"{DECODER}layers.{i}."
        for attn in ("self_attn",) if melody else ("self_attn", "encoder_attn"):
            for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
                shapes[f"{layer}{attn}.{proj}.weight"] = [dim, dim]
        norms = ("self_attn_layer_norm", "final_layer_norm")
        for norm in norms if melody else ("self_attn_layer_norm", "encoder_attn_layer_norm", "final_layer_norm"):
            shapes[f"{layer}{norm}.weight"] = [dim]
            shapes[f"{layer}{norm}.bias"] = [dim]
        shapes[f"{layer}fc1.weight"] = [ffn, dim]
        shapes[f"{layer}fc2.weight"] = [dim, ffn]
    shapes[f"{DECODER}layer_norm.weight"] = [dim]
    shapes[f"{DECODER}layer_norm.bias"] = [dim]
    if has_projection(config):
        shapes[f"{PROJ}weight"] = [dim, text_width(config)]
        shapes[f"{PROJ}bias"] = [dim]
    if has_chroma_projection(config):
        shapes[f"{CHROMA_PROJ}weight"] = [dim, int(config.get("num_chroma", 12))]
        shapes[f"{CHROMA_PROJ}bias"] = [dim]
    return shapes


def _take(tensors: dict[str, Tensor], name: str, shape: list[int]) -> Tensor:
    if name not in tensors:
        raise UserError(f"the MusicGen weights have no tensor {name!r}; the checkpoint is incomplete")
    tensor = tensors[name]
    if list(tensor.shape) != list(shape):
        raise UserError(f"MusicGen tensor {name!r} has shape {list(tensor.shape)}, its config.json needs {shape}")
    return tensor


def lm_state_from_hf(tensors: dict[str, Tensor], config: dict) -> dict[str, Tensor]:
    """A MusicGen state dict (full names, e.g. ``decoder.model.decoder.…``) → tunesmith LM weights."""
    shapes = decoder_tensor_shapes(config)

    def get(name: str) -> Tensor:
        return _take(tensors, name, shapes[name])

    d = config["decoder"]
    dim, k = d["hidden_size"], d["num_codebooks"]
    out: dict[str, Tensor] = {
        "embed.weight": torch.cat([get(f"{DECODER}embed_tokens.{q}.weight") for q in range(k)]),
        "heads": torch.stack([get(f"{HEADS}{q}.weight") for q in range(k)]),
        "transformer.norm.weight": get(f"{DECODER}layer_norm.weight"),
        "transformer.norm.bias": get(f"{DECODER}layer_norm.bias"),
    }
    melody = is_melody(config)
    for i in range(d["num_hidden_layers"]):
        src, dst = f"{DECODER}layers.{i}.", f"transformer.layers.{i}."
        sa, ca = f"{src}self_attn.", f"{src}encoder_attn."
        out[f"{dst}self_attn.qkv.weight"] = torch.cat([get(f"{sa}{p}_proj.weight") for p in "qkv"])
        out[f"{dst}self_attn.out.weight"] = get(f"{sa}out_proj.weight")
        if not melody:
            out[f"{dst}cross_attn.q.weight"] = get(f"{ca}q_proj.weight")
            out[f"{dst}cross_attn.kv.weight"] = torch.cat([get(f"{ca}{p}_proj.weight") for p in "kv"])
            out[f"{dst}cross_attn.out.weight"] = get(f"{ca}out_proj.weight")
        out[f"{dst}ffn.fc1.weight"] = get(f"{src}fc1.weight")
        out[f"{dst}ffn.fc2.weight"] = get(f"{src}fc2.weight")
        for hf_norm, norm in _layer_norms(melody):
            out[f"{dst}{norm}.weight"] = get(f"{src}{hf_norm}.weight")
            out[f"{dst}{norm}.bias"] = get(f"{src}{hf_norm}.bias")
    dtype = out["embed.weight"].dtype
    if has_projection(config):
        out["conditioner.text.proj.weight"] = get(f"{PROJ}weight")
        out["conditioner.text.proj.bias"] = get(f"{PROJ}bias")
    else:
        out["conditioner.text.proj.weight"] = torch.eye(dim, dtype=dtype)
        out["conditioner.text.proj.bias"] = torch.zeros(dim, dtype=dtype)
    if has_chroma_projection(config):
        out["conditioner.chroma.proj.weight"] = get(f"{CHROMA_PROJ}weight")
        out["conditioner.chroma.proj.bias"] = get(f"{CHROMA_PROJ}bias")
    elif melody:
        out["conditioner.chroma.proj.weight"] = torch.eye(dim, dtype=dtype)
        out["conditioner.chroma.proj.bias"] = torch.zeros(dim, dtype=dtype)
    out["conditioner.null"] = torch.zeros(dim, dtype=dtype)
    return out


def _layer_norms(melody: bool) -> tuple[tuple[str, str], ...]:
    """(transformers, tunesmith) names of a decoder layer's norms (a melody decoder has no cross-attention)."""
    cross = () if melody else (("encoder_attn_layer_norm", "norm_cross"),)
    return (("self_attn_layer_norm", "norm_self"), *cross, ("final_layer_norm", "norm_ffn"))


def hf_state_from_lm(state: dict[str, Tensor], cfg: LMConfig, *, text_hidden: int) -> dict[str, Tensor]:
    """tunesmith LM weights (LoRA already merged) → MusicGen decoder (+ ``enc_to_dec_proj``) tensors.

    UserError when a weight has no MusicGen counterpart: a trained projection where transformers has
    none (T5 width = LM width), or missing tensors.
    """
    t = cfg.transformer
    dim, k, card = t.dim, cfg.num_codebooks, cfg.card

    def get(name: str) -> Tensor:
        if name not in state:
            raise UserError(f"the LM weights have no tensor {name!r}; is this a tunesmith LM with text=t5?")
        return state[name]

    melody = cfg.conditioner.chroma
    out: dict[str, Tensor] = {}
    embed = get("embed.weight")
    heads = get("heads")
    for q in range(k):
        out[f"{DECODER}embed_tokens.{q}.weight"] = embed[q * (card + 1) : (q + 1) * (card + 1)]
        out[f"{HEADS}{q}.weight"] = heads[q]
    for i in range(t.num_layers):
        src, dst = f"transformer.layers.{i}.", f"{DECODER}layers.{i}."
        for name, value in zip("qkv", get(f"{src}self_attn.qkv.weight").chunk(3), strict=True):
            out[f"{dst}self_attn.{name}_proj.weight"] = value
        out[f"{dst}self_attn.out_proj.weight"] = get(f"{src}self_attn.out.weight")
        if not melody:
            out[f"{dst}encoder_attn.q_proj.weight"] = get(f"{src}cross_attn.q.weight")
            for name, value in zip("kv", get(f"{src}cross_attn.kv.weight").chunk(2), strict=True):
                out[f"{dst}encoder_attn.{name}_proj.weight"] = value
            out[f"{dst}encoder_attn.out_proj.weight"] = get(f"{src}cross_attn.out.weight")
        out[f"{dst}fc1.weight"] = get(f"{src}ffn.fc1.weight")
        out[f"{dst}fc2.weight"] = get(f"{src}ffn.fc2.weight")
        for hf_norm, norm in _layer_norms(melody):
            out[f"{dst}{hf_norm}.weight"] = get(f"{src}{norm}.weight")
            out[f"{dst}{hf_norm}.bias"] = get(f"{src}{norm}.bias")
    out[f"{DECODER}layer_norm.weight"] = get("transformer.norm.weight")
    out[f"{DECODER}layer_norm.bias"] = get("transformer.norm.bias")
    weight, bias = get("conditioner.text.proj.weight"), get("conditioner.text.proj.bias")
    if text_hidden != dim:
        out[f"{PROJ}weight"], out[f"{PROJ}bias"] = weight, bias
    else:
        is_identity = torch.equal(weight.float(), torch.eye(dim)) and not bool(bias.float().any())
        if not is_identity:
            raise UserError(
                "the text projection was trained, but a MusicGen whose T5 width equals the decoder width "
                f"({dim}) has no projection to hold it; it cannot be exported faithfully"
            )
    if melody:
        weight, bias = get("conditioner.chroma.proj.weight"), get("conditioner.chroma.proj.bias")
        if cfg.conditioner.chroma_bins != dim:
            out[f"{CHROMA_PROJ}weight"], out[f"{CHROMA_PROJ}bias"] = weight, bias
        elif not (torch.equal(weight.float(), torch.eye(dim)) and not bool(bias.float().any())):
            raise UserError(
                "the chroma projection was trained, but a MusicGen-melody whose chroma bins equal the decoder width "
                f"({dim}) has none to hold it; it cannot be exported faithfully"
            )
    null = state.get("conditioner.null")
    if null is not None and not melody and float(null.float().abs().max()) > 0:
        log.warning(
            "the LM's learned null condition (max |value| %.3g) has no MusicGen counterpart: transformers uses "
            "zero text states for unconditional rows, so classifier-free guidance will differ",
            float(null.float().abs().max()),
        )
    return out


def encodec_num_quantizers(audio: dict, bandwidth: float) -> int:
    """Codebooks a transformers EnCodec uses at ``bandwidth`` kbps (its own formula)."""
    hop = math.prod(int(r) for r in audio.get("upsampling_ratios") or [8, 5, 4, 2])
    frame_rate = math.ceil(int(audio.get("sampling_rate") or 24000) / hop)
    per_q = math.log2(int(audio.get("codebook_size") or 1024)) * frame_rate
    return int(max(1, math.floor(bandwidth * 1000 / per_q)))
