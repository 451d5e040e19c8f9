"""WER / CER of speech models: transcribe generated speech with a local Whisper directory and compare
with the transcripts it was generated from.

The edit distance is our own (Levenshtein over tokens, one numpy row at a time); texts are normalised
first (lower case, punctuation except apostrophes removed, whitespace collapsed). Rates are corpus
rates: total edits over total reference words (characters for CER).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tunesmith.eval.embed import AudioClip, length_batches, prepare_audio
from tunesmith.eval.modeldirs import require_model_type, weights_hash


def normalise_text(text: str) -> str:
    """Lower case, NFKC, punctuation (except apostrophes inside words) removed, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if unicodedata.category(ch).startswith("P") and ch != "'" else ch for ch in text)
    return re.sub(r"\s+", " ", text.replace(" '", " ").replace("' ", " ")).strip()


def edit_distance(reference: Sequence, hypothesis: Sequence) -> int:
    """Levenshtein distance (substitutions, insertions, deletions cost 1) between two token sequences."""
    ref, hyp = list(reference), list(hypothesis)
    if not ref:
        return len(hyp)
    if not hyp:
        return len(ref)
    vocab: dict = {}
    r = np.array([vocab.setdefault(t, len(vocab)) for t in ref])
    h = np.array([vocab.setdefault(t, len(vocab)) for t in hyp])
    steps = np.arange(len(h) + 1)
    previous = steps.copy()
    for i, token in enumerate(r, start=1):
        # without insertions: substitute/match from the diagonal or delete from above (row[0] = i deletions)
        candidate = np.concatenate(([i], np.minimum(previous[:-1] + (h != token), previous[1:] + 1)))
        # insertions chain left to right: row[j] = min over k <= j of candidate[k] + (j - k)
        previous = np.minimum.accumulate(candidate - steps) + steps
    return int(previous[-1])


def error_rates(references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, float]:
    """Corpus ``wer`` and ``cer`` (normalised texts) and the counts they rest on."""
    word_edits = words = char_edits = chars = 0
    for ref, hyp in zip(references, hypotheses, strict=True):
        r, h = normalise_text(ref), normalise_text(hyp)
        word_edits += edit_distance(r.split(), h.split())
        words += len(r.split())
        char_edits += edit_distance(r, h)
        chars += len(r)
    return {
        "wer": word_edits / words if words else float("nan"),
        "cer": char_edits / chars if chars else float("nan"),
        "words": float(words),
        "chars": float(chars),
    }


class WhisperTranscriber:
    """A local transformers Whisper directory (``WhisperForConditionalGeneration`` + its processor); audio
    longer than the feature extractor's chunk (30 s) is transcribed chunk by chunk and the texts joined."""

    def __init__(self, path: str | Path, device: str = "cpu", batch_size: int = 8, max_new_tokens: int = 128) -> None:
        import torch
        from transformers import AutoProcessor, WhisperForConditionalGeneration

        require_model_type(path, "wer", ("whisper",))
        self.path = Path(path)
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.processor = AutoProcessor.from_pretrained(str(self.path))
        self.model = WhisperForConditionalGeneration.from_pretrained(str(self.path)).to(self.device).eval()
        self.sample_rate = int(self.processor.feature_extractor.sampling_rate)
        # the decoder's positions hold the start tokens too (Whisper: 448 positions, up to 4 start tokens)
        limit = int(getattr(self.model.config, "max_target_positions", 448)) - 4
        self.max_new_tokens = max(1, min(max_new_tokens, limit))
        self.weights_hash = weights_hash(self.path)

    def transcribe(self, clips: Sequence[AudioClip]) -> list[str]:
        import torch

        wavs = [prepare_audio(c, self.sample_rate, 1)[0] for c in clips]
        texts: list[str] = [""] * len(wavs)
        chunk = int(self.processor.feature_extractor.n_samples)  # 30 s for Whisper: longer audio in pieces
        for indices in length_batches([w.shape[-1] for w in wavs], self.batch_size):
            batch = np.stack([wavs[i] for i in indices])
            pieces: list[list[str]] = [[] for _ in indices]
            for start in range(0, batch.shape[-1], chunk):
                inputs = self.processor.feature_extractor(
                    list(batch[:, start : start + chunk]), sampling_rate=self.sample_rate, return_tensors="pt"
                )
                features = inputs["input_features"].to(self.device, self.model.dtype)
                with torch.no_grad():
                    ids = self.model.generate(features, max_new_tokens=self.max_new_tokens)
                for k, text in enumerate(self.processor.tokenizer.batch_decode(ids, skip_special_tokens=True)):
                    pieces[k].append(text.strip())
            for i, parts in zip(indices, pieces, strict=True):
                texts[i] = " ".join(p for p in parts if p)
        return texts
