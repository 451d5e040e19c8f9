"""`tunesmith verify` on HiggsAudio v2 folders (an import and a plain transformers folder): each damage is
found and named — missing audio tokenizer, codebook count mismatch, truncated/altered files, missing text
tokenizer — with the CLI's exit codes; a folder of another model type is named as such."""

from __future__ import annotations

import json
import shutil

import pytest

from support.higgs_io import TOKENIZER_NAME, make_hf_folder
from tunesmith.cli import main
from tunesmith.models.export import verify_model_dir
from tunesmith.models.higgs.importer import import_higgs

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """(a plain transformers folder with its tokenizer inside, its import)."""
    root = tmp_path_factory.mktemp("higgs_verify")
    source = make_hf_folder(root / "src")
    return source, import_higgs(source, root / "model")


@pytest.fixture(params=["plain", "imported"])
def folder(request, pristine, tmp_path):
    """A fresh copy of either kind of folder, free to damage."""
    source, imported = pristine
    copy = tmp_path / request.param
    shutil.copytree(source if request.param == "plain" else imported, copy)
    return copy


def tokenizer_dir(folder):
    return folder / ("audio_tokenizer" if (folder / "manifest.json").is_file() else TOKENIZER_NAME)


def joined(folder):
    return "\n".join(verify_model_dir(folder))


def test_whole_folders_verify_and_the_cli_says_ok(pristine, capsys):
    for folder in pristine:
        assert verify_model_dir(folder) == []
        assert main(["verify", str(folder)]) == 0
        assert "ok" in capsys.readouterr().out
    assert main(["verify", str(pristine[1] / "audio_tokenizer")]) == 0  # the tokenizer folder on its own


def test_truncated_weights_are_named(folder, capsys):
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    text = joined(folder)
    assert "model.safetensors" in text and "truncated" in text
    if (folder / "manifest.json").is_file():
        assert "model.safetensors is truncated or altered" in text
    assert main(["verify", str(folder)]) == 1
    out = capsys.readouterr().out
    assert "problem(s)" in out and "model.safetensors" in out


def test_truncated_audio_tokenizer_weights_are_named(folder):
    path = tokenizer_dir(folder) / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-64])
    text = joined(folder)
    assert f"{tokenizer_dir(folder).name}: model.safetensors" in text or "audio_tokenizer/model.safetensors" in text
    assert "truncated" in text


def test_altered_file_of_the_same_size_is_a_checksum_mismatch(pristine, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(pristine[1], folder)
    for name in ("model.safetensors", "audio_tokenizer/model.safetensors", "tokenizer.json"):
        path = folder / name
        data = bytearray(path.read_bytes())
        data[-3] ^= 0x55  # inside the last tensor (or the JSON's last characters): same size, other content
        path.write_bytes(bytes(data))
    problems = verify_model_dir(folder)
    for name in ("model.safetensors", "audio_tokenizer/model.safetensors", "tokenizer.json"):
        assert any(f"{name} checksum mismatch" in p for p in problems), (name, problems)


def test_missing_audio_tokenizer(folder):
    shutil.rmtree(tokenizer_dir(folder))
    text = joined(folder)
    assert "missing audio tokenizer" in text and "no HiggsAudio v2 audio tokenizer found" in text
    if (folder / "manifest.json").is_file():
        assert "audio_tokenizer/model.safetensors is missing (listed in manifest.json)" in text


def test_missing_text_tokenizer(folder):
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()
    assert "no text tokenizer (tokenizer.json / tokenizer_config.json)" in joined(folder)


def test_truncated_text_tokenizer_without_manifest(pristine, tmp_path):
    folder = tmp_path / "plain"
    shutil.copytree(pristine[0], folder)
    path = folder / "tokenizer.json"
    path.write_text(path.read_text()[:200])
    assert "tokenizer.json: not valid JSON" in joined(folder)


def test_codebook_count_mismatch_between_model_and_tokenizer(tmp_path):
    folder = make_hf_folder(tmp_path / "eight", num_codebooks=8)
    problems = verify_model_dir(folder)
    assert len(problems) == 1, problems
    assert "codebook count mismatch — config.json has num_codebooks=8, the audio tokenizer" in problems[0]
    assert "makes 4" in problems[0]


def test_missing_tensor_and_stream_id_disagreement(pristine, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "plain"
    shutil.copytree(pristine[0], folder)
    tensors = load_file(folder / "model.safetensors")
    tensors.pop("model.norm.weight")
    save_file(tensors, folder / "model.safetensors", {"format": "pt"})
    processor = json.loads((folder / "processor_config.json").read_text())
    (folder / "processor_config.json").write_text(json.dumps({**processor, "audio_stream_bos_id": 30}))
    text = joined(folder)
    assert "weights lack model.norm.weight" in text
    assert "audio_stream_bos_id=30 differs from config.json's 32" in text


def test_another_model_type_is_named(tmp_path, capsys):
    folder = tmp_path / "llama"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert main(["verify", str(folder)]) == 1
    out = capsys.readouterr().out
    assert "model_type 'llama' is not a MusicGen or EnCodec model" in out and "higgs_audio_v2" in out
    assert main(["import", "hf", str(folder), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "model_type 'llama' cannot be imported" in err and "higgs_audio_v2 (HiggsAudio v2)" in err
