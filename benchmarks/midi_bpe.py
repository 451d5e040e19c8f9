"""How much a learned BPE tokenizer (tokenizer.bpe_vocab_size) shortens MIDI token sequences.

    .venv/bin/python benchmarks/midi_bpe.py --data DIR [--sizes 512,1024,2048] [--kind seconds|remi]

DIR is a folder written by `tunesmith prepare-midi`. For each vocabulary size the merges are learned on the
train split only (as a training run does), then every split is encoded: base tokens, merged tokens, their
ratio (the length reduction), tokens per note, and the time to learn and to encode. Without --data a fake
MAESTRO (models/midi/synthetic.py) is prepared in a temporary folder. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tunesmith.data.midi_prepare import MidiNotesStore, prepare_midi  # noqa: E402
from tunesmith.models.midi.bpe import compression, learn_bpe  # noqa: E402
from tunesmith.models.midi.synthetic import make_fake_maestro  # noqa: E402
from tunesmith.models.midi.tokenizer import MidiTokenizerConfig, build_tokenizer  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="a prepared MIDI folder (default: a fake MAESTRO)")
    parser.add_argument("--sizes", default="512,1024,2048", help="total vocabulary sizes to learn")
    parser.add_argument("--kind", default="seconds", choices=("seconds", "remi"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            make_fake_maestro(Path(tmp) / "src", pieces_per_composer=6, seconds=30.0, corrupt=False)
            data = prepare_midi(Path(tmp) / "src", Path(tmp) / "data") and Path(tmp) / "data"
        store = MidiNotesStore(data)
        base = build_tokenizer(MidiTokenizerConfig(kind=args.kind))
        splits = {s: store.select(s) for s in store.splits()}
        start = time.perf_counter()
        base_seqs = {s: [base.encode(store.notes(i)) for i in ids] for s, ids in splits.items()}
        base_seconds = time.perf_counter() - start
        notes = {s: sum(len(store.notes(i)) for i in ids) for s, ids in splits.items()}
        out = {
            "machine": f"{platform.machine()}, {len(__import__('os').sched_getaffinity(0))} CPUs",
            "date": time.strftime("%Y-%m-%d"),
            "data": str(data),
            "kind": args.kind,
            "pieces": {s: len(ids) for s, ids in splits.items()},
            "notes": notes,
            "base_vocab": base.vocab_size,
            "base_tokens": {s: int(sum(len(x) for x in seqs)) for s, seqs in base_seqs.items()},
            "base_encode_seconds": round(base_seconds, 2),
            "sizes": [],
        }
        for size in [int(x) for x in args.sizes.split(",")]:
            start = time.perf_counter()
            tok = learn_bpe(base, base_seqs["train"], size)
            learn_s = time.perf_counter() - start
            row = {"bpe_vocab_size": size, "vocab": tok.vocab_size, "merges": tok.num_merges, "learn_s": learn_s}
            for split, seqs in base_seqs.items():
                tok._cache.clear()  # time a cold encode
                start = time.perf_counter()
                n_base, n_merged = compression(tok, seqs)
                row[split] = {
                    "merged_tokens": n_merged,
                    "ratio": round(n_base / max(n_merged, 1), 3),
                    "tokens_per_note": round(n_merged / max(notes[split], 1), 3),
                    "base_tokens_per_note": round(n_base / max(notes[split], 1), 3),
                    "apply_s": round(time.perf_counter() - start, 2),
                }
                assert all(np.array_equal(tok.expand(tok.apply(x)), x) for x in seqs), "round trip failed"
            row["learn_s"] = round(learn_s, 2)
            out["sizes"].append(row)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
