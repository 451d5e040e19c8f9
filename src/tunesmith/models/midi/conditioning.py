"""Conditioning tokens: a prefix naming a piece's composer and note density, before everything else.

    Composer_<name> Density_<k> BOS notes...          (pretraining windows, continuations)
    Composer_<name> Density_<k> BOS Task_x source...  (piano-task records)

Chosen by config (``tokenizer.conditioning``: any of ``composer``, ``density``), the tokens are special
tokens of the tokenizer's vocabulary: one per configured composer (``tokenizer.composers``; a piece by
anyone else gets ``Composer_other``), one per note-density bin (notes per second, edges
``tokenizer.density_bins``), and an ``..._unknown`` token per field. Training replaces each prefix token
by its unknown token with probability ``dataset.condition_dropout`` (CFG-style), so a model also learns
the unconditional distribution: generation without ``--composer`` uses the unknown tokens.
"""

from __future__ import annotations

import re

import numpy as np

from tunesmith.errors import UserError

FIELDS: tuple[str, ...] = ("composer", "density")


def _slug(name: str) -> str:
    """A composer name as a token suffix: ASCII letters and digits, '-' between words (MidiTok allows one '_')."""
    import unicodedata

    text = unicodedata.normalize("NFKD", str(name))
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "x"


def condition_token_names(fields: list[str], composers: list[str], density_bins: list[float]) -> list[str]:
    """The special tokens of a conditioning setup (empty without fields), in a fixed order."""
    check_fields(fields)
    names: list[str] = []
    if "composer" in fields:
        names += [f"Composer_{_slug(c)}" for c in composers] + ["Composer_other", "Composer_unknown"]
    if "density" in fields:
        names += [f"Density_{k}" for k in range(len(density_bins) + 1)] + ["Density_unknown"]
    return names


def check_fields(fields: list[str]) -> None:
    unknown = [f for f in fields if f not in FIELDS]
    if unknown:
        raise UserError(f"tokenizer.conditioning: unknown field(s) {unknown}; choose from {', '.join(FIELDS)}")


class Conditioner:
    """Maps piece metadata to prefix token ids for a tokenizer (``tok.id(name)``)."""

    def __init__(self, tok, fields: list[str], composers: list[str], density_bins: list[float]) -> None:
        check_fields(fields)
        self.fields = [f for f in FIELDS if f in fields]
        self.composers = list(composers)
        self.density_bins = np.asarray(sorted(density_bins), np.float64)
        self._slugs = [_slug(c) for c in composers]
        self.tok = tok
        self.unknown = np.asarray([tok.id(f"{self._title(f)}_unknown") for f in self.fields], np.int64)

    @staticmethod
    def _title(field: str) -> str:
        return field.capitalize()

    def __len__(self) -> int:
        return len(self.fields)

    def composer_token(self, composer: str | None) -> int:
        """``Composer_<name>`` of the first configured composer whose name the given one contains (or is
        contained in; accents and case ignored), ``Composer_other`` for anyone else, unknown for None."""
        if composer is None or not str(composer).strip():
            return self.tok.id("Composer_unknown")
        given = _slug(composer)
        for s in self._slugs:
            if s in given or given in s:
                return self.tok.id(f"Composer_{s}")
        return self.tok.id("Composer_other")

    def density_token(self, notes_per_second: float | None) -> int:
        if notes_per_second is None:
            return self.tok.id("Density_unknown")
        return self.tok.id(f"Density_{int(np.searchsorted(self.density_bins, notes_per_second, side='right'))}")

    def prefix(self, composer: str | None = None, notes_per_second: float | None = None) -> np.ndarray:
        """Prefix ids ``[len(fields)]`` (int64); a None value gives the field's unknown token."""
        out = []
        for field in self.fields:
            out.append(self.composer_token(composer) if field == "composer" else self.density_token(notes_per_second))
        return np.asarray(out, np.int64)

    def piece_prefix(self, piece: dict) -> np.ndarray:
        """The prefix of a prepared piece (``pieces.jsonl`` row: composer, note_count, duration)."""
        duration = float(piece.get("duration") or 0.0)
        density = piece["note_count"] / duration if duration > 0 else None
        return self.prefix(piece.get("composer") or None, density)

    def drop(self, prefix: np.ndarray, rng: np.random.Generator, probability: float) -> np.ndarray:
        """Each token replaced by its field's unknown token with ``probability`` (CFG-style dropout)."""
        if probability <= 0 or not len(prefix):
            return prefix
        return np.where(rng.random(len(prefix)) < probability, self.unknown, prefix)

    def composer_names(self) -> list[str]:
        return list(self.composers)
