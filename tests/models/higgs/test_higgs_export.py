"""`tunesmith export RUN --format hf` for HiggsAudio v2 runs: the merged model (LoRA merged, or a full
fine-tune) as a transformers folder that loads in plain transformers, equals the adapter-applied model and
generates; `--adapters-only` as a peft adapter folder that `PeftModel.from_pretrained` loads."""

from __future__ import annotations

import json

import pytest
import torch

from support.higgs_io import forward_logits, make_tts_run, model_inputs
from tunesmith.cli import main
from tunesmith.errors import UserError
from tunesmith.fileio import sha256_file
from tunesmith.models.export import verify_model_dir
from tunesmith.models.higgs.checkpoint import load_text_tokenizer, prompt_builder, read_higgs_checkpoint
from tunesmith.models.higgs.export import export_higgs
from tunesmith.models.higgs.prompt import SpeechExample

pytestmark = pytest.mark.usefixtures("one_thread")
ATOL = 1e-5


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """(run folder, its adapter-applied PeftModel, the batch, the merged export)."""
    root = tmp_path_factory.mktemp("higgs_export")
    run, model = make_tts_run(root, "lora")
    batch = model_inputs(run / "hf_init")
    return run, model, batch, export_higgs(run, root / "merged")


def test_merged_export_equals_the_adapter_applied_model(lora_run):
    from transformers import HiggsAudioV2ForConditionalGeneration

    run, peft_model, batch, out = lora_run
    exported = HiggsAudioV2ForConditionalGeneration.from_pretrained(out).eval()
    ours, adapted = forward_logits(exported, batch), forward_logits(peft_model, batch)
    base = forward_logits(HiggsAudioV2ForConditionalGeneration.from_pretrained(run / "hf_init").eval(), batch)
    torch.testing.assert_close(ours, adapted, rtol=0, atol=ATOL)
    assert (ours - base).abs().max() > 1e-2  # the adapters change the outputs: the comparison means something
    names = set(exported.state_dict())
    assert not any("lora" in name for name in names)
    assert names == set(HiggsAudioV2ForConditionalGeneration.from_pretrained(run / "hf_init").state_dict())


def test_merged_export_generates_in_plain_transformers(lora_run):
    from transformers import AutoTokenizer, HiggsAudioV2ForConditionalGeneration

    _, peft_model, _, out = lora_run
    model = HiggsAudioV2ForConditionalGeneration.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    checkpoint = read_higgs_checkpoint(out)
    assert checkpoint.audio_tokenizer_dir == out / "audio_tokenizer"
    builder = prompt_builder(checkpoint, load_text_tokenizer(checkpoint))
    batch = builder.collate([builder.encode(SpeechExample("She sells sea shells."))])
    assert tokenizer.decode(batch["input_ids"][0]).count("She sells sea shells.") == 1
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        frames = model.generate(**inputs, max_new_tokens=12, do_sample=False)
        adapted = peft_model.generate(**inputs, max_new_tokens=12, do_sample=False)
    assert frames.shape[0] == 1 and frames.shape[-1] == 4 and 2 <= frames.shape[1] <= 12
    assert bool((frames[0, 0] == 32).all())  # the stream BOS frame, then codes
    assert torch.equal(frames, adapted)


def test_merged_export_folder_contents(lora_run):
    run, _, _, out = lora_run
    base = run / "hf_init"
    processor = json.loads((out / "processor_config.json").read_text())
    # the base's config, except that the audio tokenizer is named by the absolute path of the export's own copy
    # (plain transformers passes the path to from_pretrained as is: a relative one only works from inside DIR)
    assert processor["audio_tokenizer"]["audio_tokenizer_name_or_path"] == str(out.resolve() / "audio_tokenizer")
    from_base = json.loads((base / "processor_config.json").read_text())
    from_base["audio_tokenizer"]["audio_tokenizer_name_or_path"] = str(out.resolve() / "audio_tokenizer")
    assert processor == from_base
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        assert sha256_file(out / name) == sha256_file(base / name), name
    for name in ("config.json", "model.safetensors"):
        assert sha256_file(out / "audio_tokenizer" / name) == sha256_file(base / "audio_tokenizer" / name)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["lora_merged"] is True and manifest["exported_from"] == str((run / "checkpoints/best").resolve())
    assert {"model.safetensors", "config.json", "audio_tokenizer/model.safetensors"} <= set(manifest["files"])
    assert verify_model_dir(out) == []
    assert (out / "model.safetensors").stat().st_mode & 0o044  # readable by others under umask 022, not 0600


def test_adapters_only_folder_loads_with_peft(lora_run, tmp_path):
    from peft import PeftModel
    from transformers import HiggsAudioV2ForConditionalGeneration

    run, peft_model, batch, _ = lora_run
    out = export_higgs(run, tmp_path / "adapter", adapters_only=True)
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in out.iterdir()}
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str((run / "hf_init").resolve())
    assert config["r"] == 4 and sorted(config["target_modules"]) == ["q_proj", "v_proj"]
    base = HiggsAudioV2ForConditionalGeneration.from_pretrained(config["base_model_name_or_path"])
    loaded = PeftModel.from_pretrained(base, out).eval()
    torch.testing.assert_close(forward_logits(loaded, batch), forward_logits(peft_model, batch), rtol=0, atol=1e-6)
    with pytest.raises(UserError, match="pass --force"):
        export_higgs(run, out, adapters_only=True)
    assert export_higgs(run, out, adapters_only=True, force=True) == out


def test_full_finetune_export_and_no_adapters(tmp_path):
    from transformers import HiggsAudioV2ForConditionalGeneration

    run, model = make_tts_run(tmp_path, "full")
    out = export_higgs(run, tmp_path / "merged")
    batch = model_inputs(out)
    exported = HiggsAudioV2ForConditionalGeneration.from_pretrained(out).eval()
    torch.testing.assert_close(forward_logits(exported, batch), forward_logits(model, batch), rtol=0, atol=ATOL)
    with pytest.raises(UserError, match="--adapters-only needs a LoRA run .*finetune.mode=full"):
        export_higgs(run, tmp_path / "adapter", adapters_only=True)


def test_cli_export(lora_run, tmp_path, capsys):
    run = lora_run[0]
    assert main(["export", str(run), "--format", "hf", "--out", str(tmp_path / "m")]) == 0
    assert "HiggsAudio v2 transformers model" in capsys.readouterr().out
    assert main(["verify", str(tmp_path / "m")]) == 0
    assert main(["export", str(run), "--format", "hf", "--adapters-only", "--out", str(tmp_path / "a")]) == 0
    assert (tmp_path / "a" / "adapter_model.safetensors").is_file()
    assert main(["export", str(run), "--adapters-only", "--out", str(tmp_path / "t")]) == 2
    assert "--adapters-only applies to --format hf" in capsys.readouterr().err
    assert main(["export", str(run), "--format", "hf", "--out", str(tmp_path / "m")]) == 2  # exists, no --force
    assert main(["export", str(run), "--format", "hf", "--out", str(tmp_path / "m"), "--force"]) == 0


def test_transformers_processor_loads_the_export_and_decodes_its_generation(lora_run, monkeypatch):
    """transformers' own ``HiggsAudioV2Processor.from_pretrained`` reads the export's processor_config.json,
    text tokenizer and chat template. Its audio tokenizer class needs torchaudio (absent here), so
    ``transformers.HiggsAudioV2TokenizerModel`` is replaced by a stand-in loading tunesmith's tokenizer from the
    path transformers passes: the absolute path of the export's own copy, so it loads from any working
    directory (checked once with torchaudio's Python parts: the real class loads it)."""
    import transformers
    from transformers import HiggsAudioV2ForConditionalGeneration, HiggsAudioV2Processor

    from support.higgs_io import AudioTokenizerStandIn
    from tunesmith.models.higgs.generation import frames_to_codes
    from tunesmith.models.higgs.tokenizer import load_higgs_tokenizer

    _, _, _, out = lora_run
    monkeypatch.setattr(transformers, "HiggsAudioV2TokenizerModel", AudioTokenizerStandIn, raising=False)
    monkeypatch.setattr(AudioTokenizerStandIn, "paths", [])
    monkeypatch.chdir(out.parent.parent)  # anywhere but the export
    processor = HiggsAudioV2Processor.from_pretrained(str(out), local_files_only=True)
    assert AudioTokenizerStandIn.paths == [str(out.resolve() / "audio_tokenizer")]
    assert (processor.audio_stream_bos_id, processor.audio_stream_eos_id) == (32, 33)
    assert processor.chat_template == (out / "chat_template.jinja").read_text()
    checkpoint = read_higgs_checkpoint(out)
    builder = prompt_builder(checkpoint, load_text_tokenizer(checkpoint))
    assert processor.audio_delay_token_id == builder.tokenizer.convert_tokens_to_ids("<|reserved_special_token_6|>")
    batch = builder.collate([builder.encode(SpeechExample("She sells sea shells."))])
    model = HiggsAudioV2ForConditionalGeneration.from_pretrained(out).eval()
    with torch.no_grad():
        frames = model.generate(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=12, do_sample=False
        )
    audio = processor.batch_decode(frames)[0]
    codes = frames_to_codes(frames[0], 32, 33)
    expected = load_higgs_tokenizer(out / "audio_tokenizer").decode(codes.unsqueeze(0)).squeeze()
    assert audio.shape == expected.shape and audio.numel() == codes.shape[1] * 960
    torch.testing.assert_close(audio, expected, rtol=0, atol=1e-6)


def test_a_moved_export_still_finds_its_audio_tokenizer_in_tunesmith(lora_run, tmp_path, caplog):
    """The export names its own copy by absolute path; moved elsewhere, tunesmith resolves the stale path to the
    moved folder's audio_tokenizer/ and says so."""
    import logging
    import shutil

    _, _, _, out = lora_run
    moved = tmp_path / "moved"
    shutil.copytree(out, moved)
    aside = out.with_name(out.name + "-aside")
    out.rename(aside)  # the original is gone: its absolute path is stale
    try:
        with caplog.at_level(logging.WARNING):
            checkpoint = read_higgs_checkpoint(moved)
        assert checkpoint.audio_tokenizer_dir == moved / "audio_tokenizer"
        assert "does not hold a tokenizer here" in caplog.text
        assert main(["verify", str(moved)]) == 0
    finally:
        aside.rename(out)
