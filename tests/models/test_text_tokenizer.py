"""tunesmith's built-in text tokenizer: NFD and NFC spellings of the same text give the same ids (issue 14)."""

from __future__ import annotations

import unicodedata

import pytest
import torch

from tunesmith.models.lm.text_tokenizer import UNK, TextTokenizer

TEXTS = ["Café crème, señor", "Ångström über Zürich", "naïve jalapeño"]


@pytest.mark.parametrize("kind", ["word", "char"])
def test_nfd_text_is_not_unknown(kind) -> None:
    nfc = [unicodedata.normalize("NFC", t) for t in TEXTS]
    nfd = [unicodedata.normalize("NFD", t) for t in TEXTS]
    assert nfc != nfd  # the fixture really differs in code points
    for built_from in (nfc, nfd):  # a vocabulary built from either spelling
        tok = TextTokenizer.build(built_from, kind=kind)
        for a, b in zip(nfc, nfd, strict=True):
            ids_a, ids_b = tok.encode(a, 64), tok.encode(b, 64)
            assert ids_a == ids_b and UNK not in ids_a
    chars = [c for c in TextTokenizer.build(nfd, kind="char").vocab if len(c) == 1]
    assert chars and not any(unicodedata.combining(c) for c in chars)  # no lone accents in the vocabulary


def test_vocabulary_round_trips_through_its_tensor() -> None:
    tok = TextTokenizer.build(TEXTS, kind="word")
    again = TextTokenizer.from_tensor(tok.to_tensor())
    assert again.vocab == tok.vocab and again.kind == "word"
    ids, mask = again.batch([unicodedata.normalize("NFD", TEXTS[0]), ""], 8)
    assert ids.shape[0] == 2 and bool(mask[1].any()) is False and torch.equal(ids[0][mask[0]], ids[0][: mask[0].sum()])
