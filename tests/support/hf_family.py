"""Helpers for the MusicGen-family interop tests (no tests here): tiny random stereo and melody MusicGens.

Shapes follow tests/support/hf.py (T5 32 wide, EnCodec at 8 kHz with 4 × 32 codes at 200 Hz per channel,
decoder 48 wide × 2 layers). Stereo: decoder ``audio_channels=2`` with 8 interleaved codebooks over the mono
EnCodec. Melody: ``MusicgenMelodyForConditionalGeneration`` (12 chroma bins projected and prepended).
"""

from __future__ import annotations

from pathlib import Path

import torch

from support.hf import CARD, SAMPLE_RATE, make_tokenizer

CHROMA_LENGTH = 20  # chroma frames of the melody prefix (MusicGen: 235)


def _sub_configs(text_dim: int, channels: int, dim: int, layers: int, heads: int, ffn: int, decoder_cls):
    from transformers import EncodecConfig, T5Config

    text = T5Config(vocab_size=64, d_model=text_dim, d_kv=8, d_ff=64, num_layers=2, num_heads=4, dropout_rate=0.0)
    audio = EncodecConfig(
        sampling_rate=SAMPLE_RATE,
        codebook_size=CARD,
        codebook_dim=16,
        hidden_size=16,
        num_filters=4,
        upsampling_ratios=[8, 5],
        target_bandwidths=[4.0],  # one, as in the released MusicGens: transformers encodes prompts at the first
        num_residual_layers=1,
        num_lstm_layers=1,
    )
    decoder = decoder_cls(
        vocab_size=CARD,
        hidden_size=dim,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        ffn_dim=ffn,
        num_codebooks=4 * channels,
        audio_channels=channels,
        max_position_embeddings=512,
        dropout=0.0,
        pad_token_id=CARD,
        bos_token_id=CARD,
        decoder_start_token_id=CARD,
    )
    return text.to_dict(), audio.to_dict(), decoder.to_dict()


def stereo_config(text_dim: int = 32, dim: int = 48, layers: int = 2, heads: int = 4, ffn: int = 96):
    from transformers import MusicgenConfig, MusicgenDecoderConfig

    text, audio, decoder = _sub_configs(text_dim, 2, dim, layers, heads, ffn, MusicgenDecoderConfig)
    return MusicgenConfig(text_encoder=text, audio_encoder=audio, decoder=decoder)


def melody_config(text_dim: int = 32, dim: int = 48, layers: int = 2, heads: int = 4, ffn: int = 96, channels=1):
    from transformers import MusicgenMelodyConfig, MusicgenMelodyDecoderConfig

    text, audio, decoder = _sub_configs(text_dim, channels, dim, layers, heads, ffn, MusicgenMelodyDecoderConfig)
    return MusicgenMelodyConfig(
        text_encoder=text, audio_encoder=audio, decoder=decoder, num_chroma=12, chroma_length=CHROMA_LENGTH
    )


def _randomize(model) -> None:
    with torch.no_grad():
        for layer in model.audio_encoder.quantizer.layers:  # an untrained EnCodec's codebooks are all zero
            layer.codebook.embed.normal_()
        for name, param in model.decoder.named_parameters():  # larger than init, so that conditions matter
            if name.endswith("proj.weight") or ".fc" in name or "lm_heads" in name:
                param.normal_(std=0.3)
        for proj in ("enc_to_dec_proj", "audio_enc_to_dec_proj"):
            if hasattr(model, proj):
                getattr(model, proj).weight.normal_(std=0.5)
                getattr(model, proj).bias.normal_(std=0.5)
    for key in ("pad_token_id", "bos_token_id", "decoder_start_token_id"):
        setattr(model.generation_config, key, CARD)


def make_stereo_dir(folder: Path, seed: int = 0, **shape) -> Path:
    """A random tiny stereo MusicGen saved with save_pretrained (+ tokenizer) in ``folder``."""
    from transformers import MusicgenForConditionalGeneration

    torch.manual_seed(seed)
    from transformers import EncodecFeatureExtractor, MusicgenProcessor

    model = MusicgenForConditionalGeneration(stereo_config(**shape)).eval()
    _randomize(model)
    model.save_pretrained(folder)
    extractor = EncodecFeatureExtractor(feature_size=2, sampling_rate=SAMPLE_RATE)
    MusicgenProcessor(extractor, make_tokenizer()).save_pretrained(folder)
    return Path(folder)


def make_melody_dir(folder: Path, seed: int = 0, **shape) -> Path:
    """A random tiny MusicgenMelodyForConditionalGeneration saved with save_pretrained (+ tokenizer)."""
    from transformers import MusicgenMelodyForConditionalGeneration

    torch.manual_seed(seed)
    model = MusicgenMelodyForConditionalGeneration(melody_config(**shape)).eval()
    _randomize(model)
    model.save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    return Path(folder)


def capture_decoded_codes(model, run):
    """Codes Long[B, K, F] transformers' ``generate`` decodes (both channels of a stereo model, interleaved)."""
    captured = []
    decode = model.audio_encoder.decode

    def capture(codes, *args, **kwargs):
        captured.append(codes.clone())
        return decode(codes, *args, **kwargs)

    model.audio_encoder.decode = capture
    try:
        with torch.no_grad():
            run()
    finally:
        model.audio_encoder.decode = decode
    if len(captured) == 1:
        return captured[0][0]
    left, right = captured[0][0], captured[1][0]
    return torch.stack([left, right], dim=2).flatten(1, 2)
