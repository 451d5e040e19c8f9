"""Helpers for the HiggsAudio v2 tests (no tests here): a tiny text tokenizer, a tiny random LM and the
processor_config.json transformers writes next to them.

The LM matches the audio tokenizer fixture in tests/fixtures/higgs_tokenizer/ (4 codebooks × 32 codes;
``codebook_size`` 34 = 32 codes + stream BOS 32 + stream EOS 33). The text tokenizer is a byte-level
BPE trained offline on a few sentences, with the Llama-3 special tokens HiggsAudio's chat format uses.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "higgs_tokenizer"
TOKENIZER_DIR = FIXTURE / "model"
NUM_CODEBOOKS, CODES = 4, 32
STREAM_BOS, STREAM_EOS = CODES, CODES + 1
SPECIAL_TOKENS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|audio_out_bos|>",
    "<|AUDIO_OUT|>",
    "<|audio_eos|>",
    "<|reserved_special_token_6|>",
    "<|scene_desc_start|>",
    "<|scene_desc_end|>",
]
SENTENCES = [
    "Generate audio following instruction.",
    "The quick brown fox jumps over the lazy dog.",
    "She sells sea shells by the sea shore.",
    "Café déjà vu: naïve façades in the rain.",
    "Audio is recorded from a quiet room.",
    "It was the night before my birthday.",
]


def processor_config(tokenizer_path: str = "audio_tokenizer") -> dict:
    """processor_config.json as transformers 5.23's HiggsAudioV2Processor.save_pretrained writes it, naming the audio
    tokenizer ``tokenizer_path`` (the default: a folder next to it)."""
    return {
        "audio_bos_token": "<|audio_out_bos|>",
        "audio_delay_token": "<|reserved_special_token_6|>",
        "audio_eos_token": "<|audio_eos|>",
        "audio_stream_bos_id": 32,
        "audio_stream_eos_id": 33,
        "audio_token": "<|AUDIO_OUT|>",
        "audio_tokenizer": {
            "audio_tokenizer_class": "HiggsAudioV2TokenizerModel",
            "audio_tokenizer_name_or_path": tokenizer_path,
        },
        "feature_extractor": {"feature_extractor_type": "DacFeatureExtractor", "feature_size": 1, "hop_length": 1},
        "processor_class": "HiggsAudioV2Processor",
    }


def make_text_tokenizer():
    """A ``PreTrainedTokenizerFast`` (bos ``<|begin_of_text|>``, eos/pad ``<|end_of_text|>``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(SENTENCES * 5, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>", pad_token="<|end_of_text|>"
    )


def make_lm_config(tokenizer, **overrides):
    """A tiny ``HiggsAudioV2Config`` whose special ids are the tokenizer's (``head_dim`` set explicitly)."""
    from transformers import HiggsAudioV2Config

    ids = tokenizer.convert_tokens_to_ids
    kwargs = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=2048,
        num_codebooks=NUM_CODEBOOKS,
        codebook_size=CODES + 2,
        audio_stream_bos_id=STREAM_BOS,
        audio_stream_eos_id=STREAM_EOS,
        audio_token_id=ids("<|AUDIO_OUT|>"),
        audio_bos_token_id=ids("<|audio_out_bos|>"),
        audio_delay_token_id=ids("<|reserved_special_token_6|>"),
        pad_token_id=ids("<|end_of_text|>"),
        bos_token_id=ids("<|begin_of_text|>"),
        eos_token_id=ids("<|eot_id|>"),
    )
    kwargs.update(overrides)
    return HiggsAudioV2Config(**kwargs)


def save_tiny_lm(out: Path, use_text_head: bool = False, seed: int = 0) -> Path:
    """Save a tiny random ``HiggsAudioV2ForConditionalGeneration`` + its text tokenizer into ``out``."""
    import torch
    from transformers import HiggsAudioV2ForConditionalGeneration

    tokenizer = make_text_tokenizer()
    torch.manual_seed(seed)
    model = HiggsAudioV2ForConditionalGeneration(make_lm_config(tokenizer), use_text_head=use_text_head)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def make_processor(text_tokenizer, codec):
    """transformers' processor; its audio tokenizer slot (type-checked: HiggsAudioV2TokenizerModel needs
    torchaudio, DacModel does not) holds a tiny DacModel whose encode/decode call tunesmith's tokenizer."""
    from transformers import DacConfig, DacFeatureExtractor, DacModel, HiggsAudioV2Processor

    class CodecStandIn(DacModel):
        def __init__(self):
            super().__init__(
                DacConfig(encoder_hidden_size=1, downsampling_ratios=[2], decoder_hidden_size=2, n_codebooks=1)
            )
            self.config.num_quantizers = NUM_CODEBOOKS

        def encode(self, input_values, **kwargs):
            return SimpleNamespace(audio_codes=codec.encode(input_values))

        def decode(self, audio_codes, **kwargs):
            return SimpleNamespace(audio_values=codec.decode(audio_codes))

    feature_extractor = DacFeatureExtractor(
        feature_size=1, hop_length=1, padding_side="right", padding_value=0.0, sampling_rate=24000
    )
    return HiggsAudioV2Processor(
        feature_extractor=feature_extractor,
        tokenizer=text_tokenizer,
        audio_tokenizer=CodecStandIn(),
        audio_stream_bos_id=STREAM_BOS,
        audio_stream_eos_id=STREAM_EOS,
    )
