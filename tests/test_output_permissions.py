"""Every file tunesmith writes gets the permissions of the user's umask (0644 under umask 022, folders 0755),
so colleagues on a shared machine can read runs, samples and exported models. Libraries that write owner-only
files (safetensors saves through a 0600 temp file) are corrected through ``tunesmith.fileio.give_umask_mode``.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from support.pipeline import umask, wrong_modes


def test_give_umask_mode_follows_the_umask(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    from tunesmith.artifacts.checkpoint import save_tensors
    from tunesmith.fileio import current_umask

    for mask, expected in ((0o022, 0o644), (0o027, 0o640), (0o077, 0o600)):
        with umask(mask):
            assert current_umask() == mask
            raw, ours = tmp_path / f"raw{mask:o}.safetensors", tmp_path / f"ours{mask:o}.safetensors"
            save_file({"a": torch.zeros(2)}, str(raw))
            save_tensors(ours, {"a": torch.zeros(2)})
        assert stat.S_IMODE(ours.stat().st_mode) == expected
    # the library on its own: owner-only whatever the umask (why tunesmith corrects it)
    assert stat.S_IMODE((tmp_path / "raw22.safetensors").stat().st_mode) == 0o600


def test_wrong_modes_names_what_differs(tmp_path: Path) -> None:
    root = tmp_path / "root"
    with umask(0o022):
        (root / "ok").mkdir(parents=True)
        (root / "ok" / "a.txt").write_text("x")
        (root / "private.txt").write_text("x")
    (root / "private.txt").chmod(0o600)
    (root / "link").symlink_to(root / "ok")
    assert wrong_modes(root) == [f"not a plain file or folder: {root / 'link'}", f"0600 {root / 'private.txt'}"]
    (root / "link").unlink()
    (root / "private.txt").chmod(0o644)
    assert wrong_modes(root) == []


@pytest.mark.slow
def test_every_file_of_a_real_pipeline_gets_the_umask_permissions(quick_demo, tmp_path: Path) -> None:
    """The quick demo's chain (prepare, train codec, encode, train lm, generate, review) ran under umask 022;
    on its runs we add what else writes files: exports, a batched flac generation from an exported model, a
    codec check, a MusicGen import exported back to transformers' format, and the MIDI chain (prepare-midi,
    train midi, generate-midi, export). Every file and folder is walked."""
    from tunesmith.cli import main

    assert quick_demo.proc.returncode == 0, quick_demo.proc.stdout[-3000:] + quick_demo.proc.stderr[-3000:]
    summary = json.loads((quick_demo.out / "summary.json").read_text())
    codec_run, lm_run = Path(summary["codec_run"]), Path(summary["lm_run"])
    extras = tmp_path / "extras"  # outside the demo folder, which other tests read as the demo left it
    with umask(0o022):
        extras.mkdir()
        commands = [
            ["export", str(lm_run), "--out", str(extras / "lm-model")],
            ["export", str(codec_run), "--out", str(extras / "codec-model")],
            ["generate", str(extras / "lm-model"), "--prompt", "calm pad", "--prompt", "fast drums",
             "--batch-size", "2", "--duration", "0.3", "--format", "flac", "--out", str(extras / "batch")],
            ["check", "codec", str(codec_run), "--data", str(quick_demo.out / "data"), "--num-samples", "2",
             "--max-seconds", "1", "--out", str(extras / "check"), "--json"],
        ]  # fmt: skip
        for argv in commands:
            assert main(argv) == 0, argv
        # a transformers MusicGen (written by transformers, not checked) imported, then exported back
        from support.hf import make_musicgen_dir

        source = make_musicgen_dir(tmp_path / "hf-source")
        assert main(["import", "hf", str(source), "--out", str(extras / "imported")]) == 0
        assert main(["export", str(extras / "imported"), "--format", "hf", "--out", str(extras / "hf-export")]) == 0
        # the MIDI chain: prepare-midi, train midi tiny (two updates), generate-midi, export
        from tunesmith.models.midi.synthetic import make_fake_maestro

        make_fake_maestro(extras / "midi-source", pieces_per_composer=2, seconds=4.0)
        assert main(["prepare-midi", str(extras / "midi-source"), "--out", str(extras / "midi-data")]) == 0
        small = ["model.dim=32", "model.num_heads=2", "model.num_layers=2", "model.max_seq_len=160",
                 "dataset.context_size=64", "dataset.batch_size=4", "train.updates_per_epoch=2", "train.epochs=1",
                 "generate.tokens=16", "generate.prompt_tokens=8"]  # fmt: skip
        runs = extras / "midi-runs"
        assert main(["train", "midi", "tiny", *small, f"data={extras / 'midi-data'}", "--runs-dir", str(runs)]) == 0
        (midi_run,) = (runs / "midi").iterdir()
        assert main(["generate-midi", str(midi_run), "--tokens", "16", "--out", str(extras / "gen.mid")]) == 0
        assert main(["export", str(midi_run), "--out", str(extras / "midi-model")]) == 0
    wrong = wrong_modes(quick_demo.out) + wrong_modes(extras)
    assert not wrong, "\n".join(wrong)
    written = {p.suffix for root in (quick_demo.out, extras) for p in root.rglob("*") if p.is_file()}
    expected = {".safetensors", ".pt", ".json", ".jsonl", ".wav", ".flac", ".png", ".html", ".npy", ".md", ".mid"}
    assert expected <= written, expected - written  # the walk saw every kind of output the issue names
