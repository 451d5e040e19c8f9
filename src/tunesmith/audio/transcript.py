"""The one Unicode normalisation of transcripts and prompt texts: NFC (composed characters).

A transcript typed as ``e`` + a combining accent (NFD, as macOS file names and some datasets hold it) and
the same text with one code point per letter must give the same tokens, so every text a speech model sees
goes through :func:`normalize_text`: at prepare time (``tunesmith prepare`` stores NFC transcripts and
speaker names), in the HiggsAudio prompt builder and in the built-in text tokenizer, at training and at
generation alike. It lives in the ``audio`` room so that ``data`` and ``models`` share it.
"""

from __future__ import annotations

import unicodedata


def normalize_text(text: str) -> str:
    """``text`` in Unicode NFC; nothing else changes (case and whitespace are kept)."""
    return unicodedata.normalize("NFC", text)


def clean_transcript(text: str) -> str:
    """A transcript as prepared datasets store it: whitespace runs (newlines, tabs) → one space, trimmed, NFC."""
    return normalize_text(" ".join(text.split()))
