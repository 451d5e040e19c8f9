"""Helpers for the generation-metric tests (no tests here): tiny random CLAP, AST and Whisper directories
built from configs and saved with ``save_pretrained`` (8 kHz feature extractors, 16 mel bins, 1 s windows),
and synthetic clips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

RATE = 8000
SENTENCES = ["a calm piano melody", "fast drums and bass", "hello world this is speech", "dark slow drone"]


def _bpe(specials: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=specials[-1]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=120, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(SENTENCES * 5, trainer)
    return tok


def make_clap_dir(folder: Path, seed: int = 0) -> Path:
    """A tiny random ClapModel (16 wide, 8-d projections) with its feature extractor and a BPE tokenizer."""
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, PreTrainedTokenizerFast

    tok = _bpe(["<pad>", "<s>", "</s>", "<unk>"])
    torch.manual_seed(seed)
    text = dict(
        vocab_size=tok.get_vocab_size(),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=40,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        projection_dim=8,
    )
    audio = dict(
        hidden_size=16,
        patch_embeds_hidden_size=8,
        depths=[1, 1],
        num_attention_heads=[2, 2],
        window_size=4,
        spec_size=64,
        num_mel_bins=16,
        projection_dim=8,
        enable_fusion=False,
        patch_stride=[4, 4],
        patch_size=4,
    )
    ClapModel(ClapConfig(text_config=text, audio_config=audio, projection_dim=8)).eval().save_pretrained(folder)
    ClapFeatureExtractor(
        feature_size=16, sampling_rate=RATE, hop_length=80, max_length_s=1, fft_window_size=256, truncation="rand_trunc"
    ).save_pretrained(folder)
    PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    ).save_pretrained(folder)
    return Path(folder)


def make_ast_dir(folder: Path, classifier: bool = False, num_labels: int = 5, seed: int = 0) -> Path:
    """A tiny random AST (16 wide, one layer; 64 fbank frames = 0.64 s windows), a classifier with
    ``num_labels`` tags when ``classifier``."""
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification, ASTModel

    torch.manual_seed(seed)
    labels = {i: f"tag{i}" for i in range(num_labels)}
    config = ASTConfig(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_mel_bins=16,
        max_length=64,
        frequency_stride=10,
        time_stride=10,
        num_labels=num_labels,
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
    )
    model = ASTForAudioClassification(config) if classifier else ASTModel(config)
    if classifier:
        with torch.no_grad():
            model.classifier.dense.weight.normal_(std=2.0)  # spread the tag predictions
    model.eval().save_pretrained(folder)
    ASTFeatureExtractor(feature_size=16, sampling_rate=RATE, num_mel_bins=16, max_length=64).save_pretrained(folder)
    return Path(folder)


def make_whisper_dir(folder: Path, seed: int = 0) -> Path:
    """A tiny random Whisper (16 wide, 1 + 1 layers, 1 s windows at 8 kHz) with a BPE tokenizer."""
    from transformers import (
        GenerationConfig,
        PreTrainedTokenizerFast,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
    )

    specials = ["<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>", "<|endoftext|>"]
    tok = _bpe(specials)
    ids = {s: tok.token_to_id(s) for s in specials}
    end, start = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    torch.manual_seed(seed)
    config = WhisperConfig(
        vocab_size=tok.get_vocab_size(),
        num_mel_bins=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        d_model=16,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_source_positions=50,
        max_target_positions=32,
        pad_token_id=end,
        bos_token_id=end,
        eos_token_id=end,
        decoder_start_token_id=start,
        begin_suppress_tokens=None,
        suppress_tokens=None,
    )
    model = WhisperForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        decoder_start_token_id=start, eos_token_id=end, pad_token_id=end, bos_token_id=end, max_length=32
    )
    model.save_pretrained(folder)
    WhisperFeatureExtractor(
        feature_size=16, sampling_rate=RATE, hop_length=80, chunk_length=1, n_fft=200
    ).save_pretrained(folder)
    PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    ).save_pretrained(folder)
    return Path(folder)


def tone(freq: float, seconds: float = 1.0, rate: int = RATE, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """A mono sine ``[1, T]`` float32 at ``rate`` with optional white noise."""
    t = np.arange(int(seconds * rate)) / rate
    wav = 0.5 * np.sin(2 * np.pi * freq * t)
    if noise:
        wav = wav + noise * np.random.default_rng(seed).standard_normal(t.shape)
    return wav.astype(np.float32)[None]


# a tiny text-conditioned LM preset for the eval tests: 2 updates on 0.2 s crops, samples of 0.15 s
TINY_LM_OVERRIDES = [
    "model.transformer.dim=32",
    "model.transformer.num_layers=1",
    "model.transformer.num_heads=4",
    "model.transformer.ffn_dim=64",
    "model.conditioner.text_dim=16",
    "model.conditioner.text_layers=1",
    "dataset.batch_size=4",
    "dataset.segment_seconds=0.2",
    "optim.warmup_steps=1",
    "train.epochs=1",
    "train.updates_per_epoch=2",
    "train.log.progress=false",
    "train.log.tensorboard=false",
    "generate.num_samples=0",
    "generate.duration=0.15",
    "generate.top_k=5",
]


def make_eval_data(root: Path) -> tuple[Path, Path]:
    """(dataset, codec): a synthetic dataset prepared at the tiny codec's 8 kHz (6 tracks of 2 s in 1 s
    segments; valid = 2 tracks) and the tiny untrained codec of support.lm."""
    from support.lm import CODEC_RATE, make_codec_dir
    from tunesmith.data.prepare.dataset import prepare_dataset

    data = Path(root) / "data"
    prepare_dataset(
        [], data, source="synthetic", num_tracks=6, track_duration=2.0, sample_rate=CODEC_RATE, segment=1.0,
        min_segment=0.5, valid_fraction=0.34, progress=False,
    )  # fmt: skip
    return data, make_codec_dir(root)
