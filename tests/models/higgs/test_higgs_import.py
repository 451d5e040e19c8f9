"""`import_higgs`: a transformers HiggsAudio v2 folder → a self-contained copy with its audio tokenizer inside
(relative path), a manifest of every file, loadable in plain transformers with outputs equal to the source."""

from __future__ import annotations

import json
import logging
import os
import shutil

import pytest
import torch

from support.higgs_io import TOKENIZER_NAME, forward_logits, make_hf_folder, model_inputs, tokenizer_copy
from tunesmith.errors import UserError
from tunesmith.fileio import sha256_file
from tunesmith.models.higgs.checkpoint import read_higgs_checkpoint
from tunesmith.models.higgs.importer import import_higgs, is_higgs_import, verify_higgs_dir

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    root = tmp_path_factory.mktemp("higgs_import")
    source = make_hf_folder(root / "src")
    return source, import_higgs(source, root / "model")


def test_import_loads_in_plain_transformers_with_the_source_outputs(imported):
    from transformers import AutoTokenizer, HiggsAudioV2ForConditionalGeneration

    source, out = imported
    text = "The quick brown fox jumps over the lazy dog."
    assert AutoTokenizer.from_pretrained(out)(text).input_ids == AutoTokenizer.from_pretrained(source)(text).input_ids
    batch = model_inputs(out)
    ours = forward_logits(HiggsAudioV2ForConditionalGeneration.from_pretrained(out).eval(), batch)
    reference = forward_logits(HiggsAudioV2ForConditionalGeneration.from_pretrained(source).eval(), batch)
    torch.testing.assert_close(ours, reference, rtol=0, atol=0)
    assert (out / "chat_template.jinja").read_text() == (source / "chat_template.jinja").read_text()
    assert (out / "generation_config.json").read_bytes() == (source / "generation_config.json").read_bytes()


def test_processor_config_names_the_tokenizer_relative_and_keeps_the_rest(imported):
    source, out = imported
    ours = json.loads((out / "processor_config.json").read_text())
    theirs = json.loads((source / "processor_config.json").read_text())
    assert ours["audio_tokenizer"] == {
        "audio_tokenizer_class": "HiggsAudioV2TokenizerModel",
        "audio_tokenizer_name_or_path": "audio_tokenizer",
    }
    assert {k: v for k, v in ours.items() if k != "audio_tokenizer"} == {
        k: v for k, v in theirs.items() if k != "audio_tokenizer"
    }
    for name in ("config.json", "model.safetensors"):
        assert sha256_file(out / "audio_tokenizer" / name) == sha256_file(source / TOKENIZER_NAME / name)


def test_manifest_lists_every_file_with_sha256_and_files_are_hard_linked(imported):
    source, out = imported
    manifest = json.loads((out / "manifest.json").read_text())
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.name != "manifest.json")
    assert sorted(n for n in manifest["files"] if n != "audio_tokenizer/manifest.json") == files
    for name, meta in manifest["files"].items():
        assert meta == {"sha256": sha256_file(out / name), "bytes": (out / name).stat().st_size}
    assert manifest["model_type"] == "higgs_audio_v2" and manifest["imported_from"] == str(source.resolve())
    assert is_higgs_import(out) and not is_higgs_import(source)
    assert os.path.samefile(out / "model.safetensors", source / "model.safetensors")  # same file system: linked
    assert verify_higgs_dir(out) == []


def test_moved_import_still_finds_its_tokenizer(imported, tmp_path, caplog):
    _, out = imported
    moved = tmp_path / "elsewhere" / "model"
    shutil.copytree(out, moved)
    with caplog.at_level(logging.INFO, logger="tunesmith.models.higgs.checkpoint"):
        checkpoint = read_higgs_checkpoint(moved)
    assert checkpoint.audio_tokenizer_dir == moved / "audio_tokenizer"
    assert "stored in processor_config.json" in caplog.text and "WARNING" not in caplog.text
    assert verify_higgs_dir(moved) == []


def test_tokenizer_given_as_a_second_directory(tmp_path):
    source = make_hf_folder(tmp_path / "src", tokenizer_inside=False)
    with pytest.raises(UserError, match="no HiggsAudio v2 audio tokenizer found"):
        import_higgs(source, tmp_path / "model")
    assert not (tmp_path / "model").exists()
    tok = tokenizer_copy(tmp_path / "tok")
    out = import_higgs(source, tmp_path / "model", audio_tokenizer=tok)
    assert read_higgs_checkpoint(out).audio_tokenizer_dir == out / "audio_tokenizer"
    assert sha256_file(out / "audio_tokenizer" / "model.safetensors") == sha256_file(tok / "model.safetensors")
    assert json.loads((out / "manifest.json").read_text())["audio_tokenizer_from"] == str(tok.resolve())


def test_idempotent_and_refuses_foreign_or_existing_output_without_force(imported, tmp_path):
    source, out = imported
    before = (out / "manifest.json").stat().st_mtime_ns
    assert import_higgs(source, out) == out  # the same import again: kept as it is
    assert (out / "manifest.json").stat().st_mtime_ns == before
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not a model directory tunesmith wrote"):
        import_higgs(source, foreign)
    assert (foreign / "notes.txt").read_text() == "mine"
    other = make_hf_folder(tmp_path / "other", seed=1)
    with pytest.raises(UserError, match="pass --force"):
        import_higgs(other, out)
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    replaced = import_higgs(other, copy, force=True)
    assert json.loads((replaced / "manifest.json").read_text())["imported_from"] == str(other.resolve())
    assert sha256_file(replaced / "model.safetensors") == sha256_file(other / "model.safetensors")


def test_source_without_processor_config_gets_one(tmp_path):
    source = make_hf_folder(tmp_path / "src", tokenizer_inside=False)
    (source / "processor_config.json").unlink()
    out = import_higgs(source, tmp_path / "model", audio_tokenizer=tokenizer_copy(tmp_path / "tok"))
    config = json.loads((out / "processor_config.json").read_text())
    assert config["audio_tokenizer"]["audio_tokenizer_name_or_path"] == "audio_tokenizer"
    assert config["processor_class"] == "HiggsAudioV2Processor"
    assert (config["audio_stream_bos_id"], config["audio_stream_eos_id"]) == (32, 33)
    assert config["feature_extractor"]["sampling_rate"] == 24000
    assert config["audio_delay_token"] == "<|reserved_special_token_6|>"


def test_another_model_type_is_named(tmp_path):
    folder = tmp_path / "llama"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(UserError, match="model_type is 'llama', expected 'higgs_audio_v2'"):
        import_higgs(folder, tmp_path / "model")


def test_cli_import_with_the_audio_tokenizer_flag(tmp_path, capsys):
    from tunesmith.cli import main

    source = make_hf_folder(tmp_path / "src", tokenizer_inside=False)
    tok = tokenizer_copy(tmp_path / "tok")
    assert main(["import", "hf", str(source), "--out", str(tmp_path / "model")]) == 2
    assert "no HiggsAudio v2 audio tokenizer found" in capsys.readouterr().err
    args = ["import", "hf", str(source), "--out", str(tmp_path / "model"), "--audio-tokenizer", str(tok)]
    assert main(args) == 0
    assert "imported HiggsAudio v2" in capsys.readouterr().out
    assert verify_higgs_dir(tmp_path / "model") == [] and (tmp_path / "model" / "audio_tokenizer").is_dir()
    assert main(["verify", str(tmp_path / "model")]) == 0
    assert main(["import", "hf", str(tok), "--out", str(tmp_path / "t")]) == 2
    assert "pass this one with --audio-tokenizer" in capsys.readouterr().err


def test_sharded_source_imports_whole_and_a_missing_shard_is_named(tmp_path):
    from transformers import HiggsAudioV2ForConditionalGeneration

    source = make_hf_folder(tmp_path / "src")
    model = HiggsAudioV2ForConditionalGeneration.from_pretrained(source)
    (source / "model.safetensors").unlink()
    model.save_pretrained(source, max_shard_size="50KB")
    shards = sorted(p.name for p in source.glob("model-*.safetensors"))
    assert len(shards) > 1 and (source / "model.safetensors.index.json").is_file()
    out = import_higgs(source, tmp_path / "model")
    assert {*shards, "model.safetensors.index.json"} <= set(json.loads((out / "manifest.json").read_text())["files"])
    batch = model_inputs(out)
    reloaded = HiggsAudioV2ForConditionalGeneration.from_pretrained(out).eval()
    torch.testing.assert_close(forward_logits(reloaded, batch), forward_logits(model.eval(), batch), rtol=0, atol=0)
    (source / shards[-1]).unlink()
    problems = verify_higgs_dir(source)
    assert any(f"{shards[-1]} is missing (named by the weight index)" in p for p in problems), problems
    with pytest.raises(UserError, match=f"(?s)cannot import this HiggsAudio v2 folder.*{shards[-1]} is missing"):
        import_higgs(source, tmp_path / "again")
