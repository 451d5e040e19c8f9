"""Helpers for the Hugging Face interop tests (no tests here): a tiny random MusicGen saved by transformers.

The model is built offline from configs (T5 encoder 32 wide, EnCodec at 8 kHz with 4 × 32 codes at
200 Hz, decoder 48 wide × 2 layers) with a tiny unigram T5 tokenizer trained on a few sentences.
"""

from __future__ import annotations

from pathlib import Path

import torch

CARD, NUM_CODEBOOKS, SAMPLE_RATE, FRAME_RATE = 32, 4, 8000, 200
BANDWIDTHS = [2.0, 4.0]  # kbps → 2 and 4 codebooks (log2(32) bits × 200 Hz = 1 kbps per codebook)
SENTENCES = [
    "a calm piano melody",
    "upbeat rock with loud drums",
    "ambient pad in c major",
    "fast electronic beat with bass",
    "slow jazz guitar at night",
    "bright flute over strings",
]


def make_tokenizer():
    """A T5 tokenizer (unigram, ids 0 = <pad>, 1 = </s>, 2 = <unk>) trained offline on SENTENCES."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from tokenizers.processors import TemplateProcessing
    from transformers import T5Tokenizer

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=60, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>")
    tok.train_from_iterator(SENTENCES * 10, trainer)
    tok.post_processor = TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", tok.token_to_id("</s>"))]
    )
    return T5Tokenizer(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", extra_ids=0)


def musicgen_config(text_dim: int = 32, dim: int = 48, layers: int = 2, heads: int = 4, ffn: int = 96):
    from transformers import EncodecConfig, MusicgenConfig, MusicgenDecoderConfig, T5Config

    return MusicgenConfig(
        text_encoder=T5Config(
            vocab_size=64, d_model=text_dim, d_kv=8, d_ff=64, num_layers=2, num_heads=4, dropout_rate=0.0
        ).to_dict(),
        audio_encoder=EncodecConfig(
            sampling_rate=SAMPLE_RATE,
            codebook_size=CARD,
            codebook_dim=16,
            hidden_size=16,
            num_filters=4,
            upsampling_ratios=[8, 5],
            target_bandwidths=BANDWIDTHS,
            num_residual_layers=1,
            num_lstm_layers=1,
        ).to_dict(),
        decoder=MusicgenDecoderConfig(
            vocab_size=CARD,
            hidden_size=dim,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            ffn_dim=ffn,
            num_codebooks=NUM_CODEBOOKS,
            max_position_embeddings=512,
            dropout=0.0,
            pad_token_id=CARD,
            bos_token_id=CARD,
            decoder_start_token_id=CARD,
        ).to_dict(),
    )


def make_musicgen_dir(folder: Path, seed: int = 0, **shape) -> Path:
    """A random tiny MusicGen saved with save_pretrained (+ tokenizer) in ``folder``; returns it."""
    from transformers import MusicgenForConditionalGeneration

    torch.manual_seed(seed)
    model = MusicgenForConditionalGeneration(musicgen_config(**shape)).eval()
    with torch.no_grad():
        for layer in model.audio_encoder.quantizer.layers:  # an untrained EnCodec's codebooks are all zero
            layer.codebook.embed.normal_()
        for name, param in model.decoder.named_parameters():  # larger than init, so that text and codes matter
            if name.endswith("proj.weight") or ".fc" in name or "lm_heads" in name:
                param.normal_(std=0.3)
        if hasattr(model, "enc_to_dec_proj"):
            model.enc_to_dec_proj.weight.normal_(std=0.5)
    for key in ("pad_token_id", "bos_token_id", "decoder_start_token_id"):
        setattr(model.generation_config, key, CARD)
    model.save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    return Path(folder)


def load_hf(folder: Path):
    from transformers import AutoTokenizer, MusicgenForConditionalGeneration

    model = MusicgenForConditionalGeneration.from_pretrained(str(folder)).eval()
    return model, AutoTokenizer.from_pretrained(str(folder))
