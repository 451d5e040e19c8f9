"""Conditioning tokens: a prefix naming a piece's composer, note density, source dataset, key and tempo.

    Composer_<name> Density_<k> BOS notes...          (pretraining windows, continuations)
    Composer_<name> Density_<k> BOS Task_x source...  (piano-task records)

Chosen by config (``tokenizer.conditioning``: any of ``composer``, ``density``, ``dataset``, ``key``,
``tempo``; the prefix follows that order), the tokens are special tokens of the tokenizer's vocabulary:

- ``composer``: one per configured composer (``tokenizer.composers``; anyone else gets ``Composer_other``);
- ``density``: one per note-density bin (notes per second, edges ``tokenizer.density_bins``);
- ``dataset``: one per configured source dataset (``tokenizer.datasets``, matched like composers against a
  piece's ``dataset`` field, which ``prepare-midi --dataset`` sets; others get ``Dataset_other``);
- ``key``: one per major and minor key (``Key_eb-major`` …), from the piece's ``key`` field (the file's
  first key signature, ``prepare-midi``);
- ``tempo``: one per tempo bin (quarter notes per minute, edges ``tokenizer.tempo_bins``), from the piece's
  ``tempo`` field (the file's first tempo event);

and an ``..._unknown`` token per field, used where the metadata has no value. Training replaces each prefix
token by its unknown token with probability ``dataset.condition_dropout`` (CFG-style), so a model also
learns the unconditional distribution: generation without a condition uses the unknown tokens, and
classifier-free guidance mixes the two (:mod:`tunesmith.models.midi.generation`).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from tunesmith.errors import UserError
from tunesmith.models.midi.notes import KEY_TONICS

FIELDS: tuple[str, ...] = ("composer", "density", "dataset", "key", "tempo")  # prefix order; new ones go last
DEFAULT_DENSITY_BINS: tuple[float, ...] = (2.0, 4.0, 8.0, 16.0)
DEFAULT_TEMPO_BINS: tuple[float, ...] = (70.0, 95.0, 120.0, 150.0)
KEY_NAMES: tuple[str, ...] = tuple(f"{t}-{mode}" for mode in ("major", "minor") for t in KEY_TONICS)
_TONIC = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}
_KEY_TEXT = re.compile(r"^\s*([a-g])\s*(#|sharp|s|b|flat)?[\s_-]*(major|minor|maj|min|m)?\s*$")


def _slug(name: str) -> str:
    """A name as a token suffix: ASCII letters and digits, '-' between words (MidiTok allows one '_')."""
    import unicodedata

    text = unicodedata.normalize("NFKD", str(name))
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "x"


def parse_key(text: str | None) -> int | None:
    """``"Eb major"`` → 3, ``"c# minor"`` / ``"C#m"`` → 13 (0..11 major tonics, 12..23 minor), None when
    empty or unreadable."""
    if text is None or not str(text).strip():
        return None
    match = _KEY_TEXT.match(str(text).lower())
    if not match:
        return None
    letter, accidental, mode = match.groups()
    tonic = _TONIC[letter] + (1 if accidental in ("#", "sharp", "s") else -1 if accidental in ("b", "flat") else 0)
    return tonic % 12 + (12 if mode in ("minor", "min", "m") else 0)


def condition_token_names(
    fields: list[str],
    composers: list[str],
    density_bins: list[float],
    *,
    datasets: list[str] = (),  # type: ignore[assignment]
    tempo_bins: list[float] = DEFAULT_TEMPO_BINS,  # type: ignore[assignment]
) -> list[str]:
    """The special tokens of a conditioning setup (empty without fields), in a fixed order."""
    check_fields(fields)
    names: list[str] = []
    if "composer" in fields:
        names += [f"Composer_{_slug(c)}" for c in composers] + ["Composer_other", "Composer_unknown"]
    if "density" in fields:
        names += [f"Density_{k}" for k in range(len(density_bins) + 1)] + ["Density_unknown"]
    if "dataset" in fields:
        names += [f"Dataset_{_slug(d)}" for d in datasets] + ["Dataset_other", "Dataset_unknown"]
    if "key" in fields:
        names += [f"Key_{k}" for k in KEY_NAMES] + ["Key_unknown"]
    if "tempo" in fields:
        names += [f"Tempo_{k}" for k in range(len(tempo_bins) + 1)] + ["Tempo_unknown"]
    return names


def config_token_names(cfg: Any) -> list[str]:
    """:func:`condition_token_names` of a ``tokenizer:`` section (a MidiTokenizerConfig)."""
    return condition_token_names(
        cfg.conditioning,
        cfg.composers,
        cfg.density_bins,
        datasets=list(getattr(cfg, "datasets", []) or []),
        tempo_bins=list(getattr(cfg, "tempo_bins", DEFAULT_TEMPO_BINS)),
    )


def check_fields(fields: list[str]) -> None:
    unknown = [f for f in fields if f not in FIELDS]
    if unknown:
        raise UserError(f"tokenizer.conditioning: unknown field(s) {unknown}; choose from {', '.join(FIELDS)}")


class Conditioner:
    """Maps piece metadata to prefix token ids for a tokenizer (``tok.id(name)``)."""

    def __init__(
        self,
        tok,
        fields: list[str],
        composers: list[str],
        density_bins: list[float],
        *,
        datasets: list[str] = (),  # type: ignore[assignment]
        tempo_bins: list[float] = DEFAULT_TEMPO_BINS,  # type: ignore[assignment]
    ) -> None:
        check_fields(fields)
        self.fields = [f for f in FIELDS if f in fields]
        self.composers = list(composers)
        self.datasets = list(datasets)
        self.density_bins = np.asarray(sorted(density_bins), np.float64)
        self.tempo_bins = np.asarray(sorted(tempo_bins), np.float64)
        self._slugs = [_slug(c) for c in composers]
        self._dataset_slugs = [_slug(d) for d in self.datasets]
        self.tok = tok
        self.unknown = np.asarray([tok.id(f"{self._title(f)}_unknown") for f in self.fields], np.int64)

    @classmethod
    def from_config(cls, tok, cfg: Any) -> Conditioner:
        """From a ``tokenizer:`` section (a MidiTokenizerConfig)."""
        return cls(
            tok,
            cfg.conditioning,
            cfg.composers,
            cfg.density_bins,
            datasets=list(getattr(cfg, "datasets", []) or []),
            tempo_bins=list(getattr(cfg, "tempo_bins", DEFAULT_TEMPO_BINS)),
        )

    @classmethod
    def from_meta(cls, tok, meta: dict) -> Conditioner:
        """From :meth:`meta` as stored in a checkpoint (older checkpoints: composer/density only)."""
        return cls(
            tok,
            meta["fields"],
            meta.get("composers") or [],
            meta.get("density_bins") or [],
            datasets=meta.get("datasets") or [],
            tempo_bins=meta.get("tempo_bins") or list(DEFAULT_TEMPO_BINS),
        )

    def meta(self) -> dict:
        """Plain data for a checkpoint; :meth:`from_meta` rebuilds this conditioner."""
        out: dict = {"fields": list(self.fields), "composers": self.composers}
        out["density_bins"] = [float(x) for x in self.density_bins]
        if "dataset" in self.fields:
            out["datasets"] = self.datasets
        if "tempo" in self.fields:
            out["tempo_bins"] = [float(x) for x in self.tempo_bins]
        return out

    @staticmethod
    def _title(field: str) -> str:
        return field.capitalize()

    def __len__(self) -> int:
        return len(self.fields)

    @staticmethod
    def _match(name: str | None, slugs: list[str]) -> str | None:
        """The configured slug that ``name`` contains or is contained in; "" for no match; None for no name."""
        if name is None or not str(name).strip():
            return None
        given = _slug(name)
        return next((s for s in slugs if s in given or given in s), "")

    def composer_token(self, composer: str | None) -> int:
        """``Composer_<name>`` of the first configured composer whose name the given one contains (or is
        contained in; accents and case ignored), ``Composer_other`` for anyone else, unknown for None."""
        slug = self._match(composer, self._slugs)
        return self.tok.id("Composer_unknown" if slug is None else f"Composer_{slug or 'other'}")

    def dataset_token(self, dataset: str | None) -> int:
        """``Dataset_<name>`` (matched like composers), ``Dataset_other``, unknown for None."""
        slug = self._match(dataset, self._dataset_slugs)
        return self.tok.id("Dataset_unknown" if slug is None else f"Dataset_{slug or 'other'}")

    def density_token(self, notes_per_second: float | None) -> int:
        if notes_per_second is None:
            return self.tok.id("Density_unknown")
        return self.tok.id(f"Density_{int(np.searchsorted(self.density_bins, notes_per_second, side='right'))}")

    def key_token(self, key: str | None) -> int:
        """``Key_<tonic>-<mode>`` of a key such as "Eb major" or "f# minor"; unknown for None/unreadable."""
        index = parse_key(key)
        return self.tok.id("Key_unknown" if index is None else f"Key_{KEY_NAMES[index]}")

    def tempo_token(self, qpm: float | None) -> int:
        if qpm is None or not qpm > 0:
            return self.tok.id("Tempo_unknown")
        return self.tok.id(f"Tempo_{int(np.searchsorted(self.tempo_bins, qpm, side='right'))}")

    def prefix(
        self,
        composer: str | None = None,
        notes_per_second: float | None = None,
        *,
        dataset: str | None = None,
        key: str | None = None,
        tempo: float | None = None,
    ) -> np.ndarray:
        """Prefix ids ``[len(fields)]`` (int64); a None value gives the field's unknown token."""
        token = {
            "composer": lambda: self.composer_token(composer),
            "density": lambda: self.density_token(notes_per_second),
            "dataset": lambda: self.dataset_token(dataset),
            "key": lambda: self.key_token(key),
            "tempo": lambda: self.tempo_token(tempo),
        }
        return np.asarray([token[field]() for field in self.fields], np.int64)

    def piece_prefix(self, piece: dict) -> np.ndarray:
        """The prefix of a prepared piece (``pieces.jsonl`` row: composer, note_count, duration and, where
        known, dataset, key, tempo)."""
        duration = float(piece.get("duration") or 0.0)
        density = piece["note_count"] / duration if duration > 0 else None
        return self.prefix(
            piece.get("composer") or None,
            density,
            dataset=piece.get("dataset") or None,
            key=piece.get("key") or None,
            tempo=float(piece.get("tempo") or 0.0) or None,
        )

    def drop(self, prefix: np.ndarray, rng: np.random.Generator, probability: float) -> np.ndarray:
        """Each token replaced by its field's unknown token with ``probability`` (CFG-style dropout)."""
        if probability <= 0 or not len(prefix):
            return prefix
        return np.where(rng.random(len(prefix)) < probability, self.unknown, prefix)

    def unconditional(self) -> np.ndarray:
        """The prefix with every field dropped ``[len(fields)]``: what classifier-free guidance mixes against."""
        return self.unknown.copy()

    def composer_names(self) -> list[str]:
        return list(self.composers)

    def dataset_names(self) -> list[str]:
        return list(self.datasets)
