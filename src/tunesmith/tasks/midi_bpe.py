"""The learned BPE tokenizer of a MIDI run (``tokenizer.bpe_vocab_size > 0``; :mod:`tunesmith.models.midi.bpe`).

Called by ``MidiSolver.prepare`` at the start of training, before the model is built:

- with ``init_from`` the merges come from the source checkpoint's tokenizer description (its weights
  were trained with them; its base tokenizer must be the one configured here);
- otherwise they are learned on the base tokens of the prepared store's **train** split only (never
  valid or test), on the main rank first, and kept in ``RUN/tokenizer_bpe.json`` under a key made of the
  store's fingerprint, the base tokenizer's description and the vocabulary size: a resumed run reads
  them back, the other ranks read what the main rank wrote, a changed key learns them again.

Either way the checkpoints carry the result as ``extra.tokenizer_desc`` (and config.json ``meta``), from
which ``generate-midi``, ``tunesmith eval`` and the review page rebuild it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

from tunesmith.config import canonical_json
from tunesmith.errors import UserError
from tunesmith.models.midi.bpe import BPE_DESC_VERSION, MIN_PAIR_COUNT, BpeTokenizer, learn_bpe
from tunesmith.models.midi.tasks import VELOCITY_TASKS
from tunesmith.models.midi.tokenizer import MidiTokenizer, tokenizer_from_desc

log = logging.getLogger("tunesmith.midi")
CACHE_FILE = "tokenizer_bpe.json"


def check_bpe_tasks(stage: str, tasks: list[str], bpe_vocab_size: int) -> None:
    """UserError for velocity tasks with BPE (they need one velocity token per note; see bpe.py)."""
    if bpe_vocab_size and stage == "piano_task":
        velocity = [t for t in tasks if t in VELOCITY_TASKS]
        if velocity:
            raise UserError(
                f"piano_task.tasks {velocity} with tokenizer.bpe_vocab_size={bpe_vocab_size}: velocity tasks "
                "predict one velocity token per note, which BPE merges with the notes' other tokens. Train "
                "them with tokenizer.bpe_vocab_size=0; partition and note-denoising tasks work with BPE"
            )


def comparable_desc(desc: dict) -> dict:
    """A description without what does not change the tokens (MidiTok's version string)."""
    out = {k: v for k, v in desc.items() if k != "miditok_version"}
    if isinstance(out.get("base"), dict):
        out["base"] = comparable_desc(out["base"])
    return out


def cache_key(store_fingerprint: dict, base: MidiTokenizer, vocab_size: int) -> str:
    """What the learned merges depend on, hashed: the train data, the base tokenizer, the size, the rules."""
    payload = {
        "data": store_fingerprint,
        "base": comparable_desc(base.describe()),
        "vocab_size": int(vocab_size),
        "min_count": MIN_PAIR_COUNT,
        "version": BPE_DESC_VERSION,
        "split": "train",
    }
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:16]


def learn_on_store(base: MidiTokenizer, store: Any, vocab_size: int) -> BpeTokenizer:
    """Merges learned on the base tokens of every piece of ``store``'s train split."""
    ids = store.select("train")
    if not ids:
        raise UserError(f"tokenizer.bpe_vocab_size: {store.root} has no train split to learn BPE merges on")
    start = time.perf_counter()
    tok = learn_bpe(base, (base.encode(store.notes(i)) for i in ids), vocab_size)
    log.info(
        "learned %d BPE merges on %d train pieces in %.1f s (vocabulary %d → %d tokens)",
        tok.num_merges,
        len(ids),
        time.perf_counter() - start,
        base.vocab_size,
        tok.vocab_size,
    )
    if tok.vocab_size < vocab_size:
        log.warning(
            "tokenizer.bpe_vocab_size=%d: the train split only has pairs for %d tokens", vocab_size, tok.vocab_size
        )
    return tok


def _init_source_tokenizer(source: str, base: MidiTokenizer) -> MidiTokenizer:
    from tunesmith.artifacts import checkpoint as ckpt

    folder = ckpt.find_checkpoint(source, which="best")
    meta = (ckpt.read_config(folder).get("meta") or {}).get("tokenizer_desc")
    if not meta and (folder / ckpt.STATE).is_file():
        meta = (ckpt.load_state(folder).get("extra") or {}).get("tokenizer_desc")
    if not isinstance(meta, dict) or meta.get("kind") != "bpe":
        raise UserError(f"init_from={source}: {folder} was not trained with a BPE tokenizer (tokenizer.bpe_vocab_size)")
    if comparable_desc(meta.get("base") or {}) != comparable_desc(base.describe()):
        raise UserError(f"init_from={source}: its BPE tokenizer has another base tokenizer than the one configured")
    return tokenizer_from_desc(meta)


def run_tokenizer(
    base: MidiTokenizer,
    vocab_size: int,
    *,
    store: Any,
    run_dir: Path,
    init_from: str = "",
    is_main: bool = True,
) -> MidiTokenizer:
    """The run's tokenizer: ``base`` when ``vocab_size`` is 0, else the BPE tokenizer (module docstring)."""
    if not vocab_size:
        return base
    if init_from:
        tok = _init_source_tokenizer(init_from, base)
        log.info("BPE tokenizer from init_from=%s: %d merges", init_from, tok.num_merges)  # type: ignore[attr-defined]
        return tok

    from tunesmith.data.midi_prepare import store_fingerprint
    from tunesmith.engine.distributed import main_rank_first
    from tunesmith.fileio import atomic_write_json

    key = cache_key(store_fingerprint(store.root), base, vocab_size)
    path = Path(run_dir) / CACHE_FILE

    def make() -> MidiTokenizer:
        cached = _read_cache(path)
        if cached.get("key") == key:
            tok = tokenizer_from_desc(cached["desc"])
            log.info("BPE tokenizer from %s: %d merges", path, tok.num_merges)  # type: ignore[attr-defined]
            return tok
        tok = learn_on_store(base, store, vocab_size)
        if is_main:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(path, {"key": key, "vocab_size": vocab_size, "desc": tok.describe()})
        return tok

    return main_rank_first(is_main, make)


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) and isinstance(data.get("desc"), dict) else {}
