"""Helpers for the HiggsAudio v2 import/verify/export tests (no tests here).

A "downloaded" transformers folder: the tiny random LM + text tokenizer of :mod:`support.higgs`, a
``processor_config.json`` in the exact layout transformers 5.23's ``HiggsAudioV2Processor.save_pretrained``
writes (the audio tokenizer named by an absolute path on the machine that saved it), a chat template,
and the tiny audio tokenizer fixture as a sub-folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from support.higgs import STREAM_BOS, STREAM_EOS, TOKENIZER_DIR, make_lm_config, make_text_tokenizer, save_tiny_lm

TOKENIZER_NAME = "higgs-audio-v2-tokenizer"
CHAT_TEMPLATE = "{% for message in messages %}{{ message['content'] }}{% endfor %}"


def processor_config(tokenizer_path: str) -> dict:
    """processor_config.json as transformers 5.23's HiggsAudioV2Processor.save_pretrained writes it."""
    return {
        "audio_bos_token": "<|audio_out_bos|>",
        "audio_delay_token": "<|reserved_special_token_6|>",
        "audio_eos_token": "<|audio_eos|>",
        "audio_stream_bos_id": STREAM_BOS,
        "audio_stream_eos_id": STREAM_EOS,
        "audio_token": "<|AUDIO_OUT|>",
        "audio_tokenizer": {
            "audio_tokenizer_class": "HiggsAudioV2TokenizerModel",
            "audio_tokenizer_name_or_path": tokenizer_path,
        },
        "feature_extractor": {
            "feature_extractor_type": "DacFeatureExtractor",
            "feature_size": 1,
            "hop_length": 1,
            "padding_side": "right",
            "padding_value": 0.0,
            "return_attention_mask": True,
            "sampling_rate": 24000,
        },
        "processor_class": "HiggsAudioV2Processor",
    }


def make_hf_folder(
    out: Path, *, tokenizer_inside: bool = True, use_text_head: bool = False, seed: int = 0, **config_overrides
) -> Path:
    """A transformers HiggsAudio v2 folder as downloaded: the tokenizer as the sub-folder ``TOKENIZER_NAME``
    (``tokenizer_inside``) or nowhere (pass it explicitly); the processor names a stale absolute path.
    ``config_overrides`` change the tiny LM's config (e.g. ``num_codebooks=8``)."""
    if config_overrides:
        import torch
        from transformers import HiggsAudioV2ForConditionalGeneration

        tokenizer = make_text_tokenizer()
        torch.manual_seed(seed)
        config = make_lm_config(tokenizer, **config_overrides)
        HiggsAudioV2ForConditionalGeneration(config, use_text_head=use_text_head).save_pretrained(out)
        tokenizer.save_pretrained(out)
    else:
        save_tiny_lm(out, use_text_head=use_text_head, seed=seed)
    (out / "processor_config.json").write_text(json.dumps(processor_config(f"/home/someone/hf/{TOKENIZER_NAME}")))
    (out / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    if tokenizer_inside:
        shutil.copytree(TOKENIZER_DIR, out / TOKENIZER_NAME)
    return out


def tokenizer_copy(out: Path) -> Path:
    """A copy of the tiny audio tokenizer fixture at ``out``."""
    shutil.copytree(TOKENIZER_DIR, out)
    return out


def model_inputs(folder: Path, seed: int = 0) -> dict:
    """A 2-row batch (one row with a voice reference) for the model in ``folder``, built with tunesmith's
    prompt builder from random codes: ``input_ids``, ``attention_mask``, ``audio_input_ids``,
    ``audio_input_ids_mask``, ``audio_labels``."""
    import torch

    from support.higgs import CODES, NUM_CODEBOOKS
    from tunesmith.models.higgs.checkpoint import load_text_tokenizer, prompt_builder, read_higgs_checkpoint
    from tunesmith.models.higgs.prompt import SpeechExample

    checkpoint = read_higgs_checkpoint(folder)
    builder = prompt_builder(checkpoint, load_text_tokenizer(checkpoint))
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, CODES, (2, NUM_CODEBOOKS, 7), generator=g)
    return builder.collate(
        [
            builder.encode(SpeechExample("She sells sea shells.", codes=codes[0])),
            builder.encode(
                SpeechExample("Hello.", codes=codes[1, :, :4], reference_text="Hi.", reference_codes=codes[0])
            ),
        ]
    )


MODEL_INPUTS = ("input_ids", "attention_mask", "audio_input_ids", "audio_input_ids_mask")


def forward_logits(model, batch: dict):
    """The audio logits [B, T, K·codebook_size] of a transformers HiggsAudio model on ``batch`` (no grad)."""
    import torch

    with torch.no_grad():
        return model(**{k: batch[k] for k in MODEL_INPUTS}).logits


def make_tts_run(root: Path, mode: str = "lora", seed: int = 1):
    """A tts run folder as the engine writes it, made without training: ``RUN/hf_init`` (``import_higgs`` of a
    tiny HF folder) and ``RUN/checkpoints/best`` holding the state dict of the model the tts task trains
    (a peft ``PeftModel`` with non-zero LoRA B matrices for ``mode="lora"``; every weight nudged for
    ``mode="full"``), the run config's ``finetune``/``text_loss`` and ``meta`` {family, source}.
    Returns (run folder, that model in eval mode)."""
    import dataclasses

    import torch

    from tunesmith.artifacts.checkpoint import save_checkpoint
    from tunesmith.models.higgs.checkpoint import read_higgs_checkpoint
    from tunesmith.models.higgs.importer import import_higgs
    from tunesmith.models.higgs.model import (
        FAMILY,
        HiggsFinetuneConfig,
        HiggsLoraSettings,
        load_base_model,
        prepare_for_training,
    )

    source = make_hf_folder(root / "src")
    run = root / "run"
    hf_init = import_higgs(source, run / "hf_init")
    lora = HiggsLoraSettings(r=4, alpha=8.0, dropout=0.0, target_modules=["q_proj", "v_proj"])
    finetune = HiggsFinetuneConfig(mode=mode, lora=lora)
    model = prepare_for_training(load_base_model(read_higgs_checkpoint(hf_init)), finetune, text_loss=False)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if mode == "full" or "lora_B" in name:
                param.add_(0.05 * torch.randn(param.shape, generator=g))
    config = {
        "model_type": "tunesmith-tts",
        "format_version": 1,
        "meta": {"family": FAMILY, "source": str(hf_init), "task": "tts"},
        "config": {"init_from": f"hf:{source}", "finetune": dataclasses.asdict(finetune), "text_loss": False},
    }
    save_checkpoint(
        run / "checkpoints" / "best",
        weights={"model": model.state_dict()},
        state={"step": 3, "epoch": 1},
        config=config,
    )
    return run, model.eval()


class AudioTokenizerStandIn:
    """Stands in for transformers' ``HiggsAudioV2TokenizerModel`` (which needs torchaudio) when transformers'
    processor loads a folder: ``from_pretrained(path)`` records the path transformers passes and returns a
    DacModel (the processor type-checks its audio tokenizer) whose encode/decode run tunesmith's tokenizer
    loaded from that path."""

    paths: list[str] = []

    @classmethod
    def from_pretrained(cls, path, **kwargs):
        from types import SimpleNamespace

        from transformers import DacConfig, DacModel

        from tunesmith.models.higgs.tokenizer import load_higgs_tokenizer

        cls.paths.append(str(path))
        codec = load_higgs_tokenizer(Path(path))

        class Wrapped(DacModel):
            def encode(self, input_values, **_):
                return SimpleNamespace(audio_codes=codec.encode(input_values))

            def decode(self, audio_codes, **_):
                return SimpleNamespace(audio_values=codec.decode(audio_codes))

        model = Wrapped(DacConfig(encoder_hidden_size=1, downsampling_ratios=[2], decoder_hidden_size=2, n_codebooks=1))
        model.config.num_quantizers = codec.n_q
        return model
