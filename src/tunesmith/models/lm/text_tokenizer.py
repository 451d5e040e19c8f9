"""A small tokenizer built from a dataset's own texts (descriptions, or transcripts for TTS).

``word``: lower-cased words and punctuation marks, the most frequent ones kept; ``char``: every
character seen (the right choice for transcripts, where unseen words must still spell out). Id 0
is padding, 1 is unknown. The vocabulary travels with the model weights as a uint8 tensor holding
its JSON (see :func:`vocab_to_tensor`), so a saved model always carries its tokenizer.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from typing import Literal

import torch
from torch import Tensor

from tunesmith.audio.transcript import normalize_text as nfc

PAD, UNK = 0, 1
SPECIALS = ["<pad>", "<unk>"]
_WORD = re.compile(r"\w+|[^\w\s]")

TokenizerKind = Literal["word", "char"]


def normalize_text(text: str) -> str:
    """Lower-cased, trimmed, Unicode NFC: "É" typed as E + a combining accent (NFD, as macOS file names and some
    transcripts arrive) and as one code point give the same tokens, at training and at generation."""
    return nfc(text.lower().strip())


def split_text(text: str, kind: TokenizerKind) -> list[str]:
    text = normalize_text(text)
    return _WORD.findall(text) if kind == "word" else list(text)


class TextTokenizer:
    """Maps text to ids [L] with a fixed vocabulary (specials first)."""

    def __init__(self, vocab: list[str], kind: TokenizerKind) -> None:
        if vocab[: len(SPECIALS)] != SPECIALS:
            raise ValueError(f"a text vocabulary must start with {SPECIALS}")
        self.vocab = list(vocab)
        self.kind = kind
        self.index = {tok: i for i, tok in enumerate(self.vocab)}

    @classmethod
    def build(
        cls, texts: Iterable[str], kind: TokenizerKind = "word", max_size: int = 2000, min_count: int = 1
    ) -> TextTokenizer:
        """Vocabulary of the ``max_size`` most frequent tokens (ties broken alphabetically)."""
        counts = Counter(tok for text in texts if text for tok in split_text(text, kind))
        ranked = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))
        return cls(SPECIALS + ranked[: max(0, max_size - len(SPECIALS))], kind)

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, text: str, max_len: int) -> list[int]:
        """text → up to ``max_len`` ids (unknown tokens → UNK; longer texts are cut)."""
        return [self.index.get(tok, UNK) for tok in split_text(text, self.kind)][:max_len]

    def batch(self, texts: list[str], max_len: int) -> tuple[Tensor, Tensor]:
        """texts → ids Long[B, L] (padded with PAD) and mask Bool[B, L] (True = token); L >= 1."""
        encoded = [self.encode(t or "", max_len) for t in texts]
        length = max([len(e) for e in encoded] + [1])
        ids = torch.full((len(texts), length), PAD, dtype=torch.long)
        for i, e in enumerate(encoded):
            ids[i, : len(e)] = torch.tensor(e, dtype=torch.long)
        return ids, ids != PAD

    def to_tensor(self) -> Tensor:
        return vocab_to_tensor({"kind": self.kind, "vocab": self.vocab})

    @classmethod
    def from_tensor(cls, data: Tensor) -> TextTokenizer:
        obj = vocab_from_tensor(data)
        return cls(obj["vocab"], obj["kind"])


def vocab_to_tensor(obj: dict) -> Tensor:
    """Plain JSON-able dict → uint8 tensor of its UTF-8 JSON (stored in safetensors with the weights)."""
    raw = json.dumps(obj, ensure_ascii=False, sort_keys=True).encode("utf-8")
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8).clone()


def vocab_from_tensor(data: Tensor) -> dict:
    return json.loads(bytes(data.to(torch.uint8).cpu().tolist()).decode("utf-8"))
