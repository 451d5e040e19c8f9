"""`tunesmith train tts` on a tiny HiggsAudio v2 and a tiny prepared speech dataset: LoRA and full fine-tuning end
to end, what a run leaves behind (hf_init, adapter, samples, checkpoint meta), loading a run back, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from support.speech import prepare_speech_dataset, requires_espeak
from support.tts import make_higgs_dir
from tunesmith.artifacts import checkpoint as ckpt
from tunesmith.cli import main
from tunesmith.data.datasets.speech_prompts import SpeechItem, collate_prompts
from tunesmith.models.higgs.loss import MODEL_INPUTS

pytestmark = [pytest.mark.usefixtures("one_thread"), requires_espeak]

COMMON = ["train.log.progress=false", "train.log.tensorboard=false"]


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """Real speech with known transcripts: espeak-ng, 2 speakers × 3 sentences, prepared at 24 kHz."""
    return prepare_speech_dataset(tmp_path_factory.mktemp("speech"), valid_fraction=0.34)


@pytest.fixture(scope="module")
def data(speech):
    return speech[1]


@pytest.fixture(scope="module")
def higgs(tmp_path_factory):
    return make_higgs_dir(tmp_path_factory.mktemp("higgs") / "higgs")


@pytest.fixture(scope="module")
def higgs_text_head(tmp_path_factory):
    return make_higgs_dir(tmp_path_factory.mktemp("higgs_th") / "higgs", use_text_head=True)


def train(runs: Path, *overrides: str, preset: str = "tiny", capsys=None) -> Path:
    code = main(["train", "tts", preset, *COMMON, *overrides, "--runs-dir", str(runs), "--json"])
    assert code == 0
    return Path(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["run_dir"])


def plain_name(name: str) -> str:
    """A PeftModel state-dict name → the transformers name of the same base tensor."""
    return name.removeprefix("base_model.model.").replace(".base_layer.", ".")


def a_batch(loaded):
    g = torch.Generator().manual_seed(3)
    items = [
        SpeechItem(0, "She sells sea shells.", torch.randint(0, 32, (4, 9), generator=g)),
        SpeechItem(
            1, "Hi.", torch.randint(0, 32, (4, 5), generator=g), "", "Hello there.", torch.randint(0, 32, (4, 6))
        ),
    ]
    batch = collate_prompts(loaded.builder, items)
    return {k: batch[k] for k in MODEL_INPUTS}


def test_lora_run_trains_only_adapters_and_loads_back(higgs, data, tmp_path, capsys):
    from peft import PeftModel
    from transformers import HiggsAudioV2ForConditionalGeneration

    from tunesmith.models.higgs.model import load_higgs

    run = train(tmp_path / "runs", f"data={data}", f"init_from=hf:{higgs}", capsys=capsys)
    assert {"hf_init", "adapter", "checkpoints", "samples"} <= {p.name for p in run.iterdir()}
    last = run / "checkpoints" / "last"
    meta = ckpt.read_config(last)["meta"]
    assert meta["family"] == "higgs_audio_v2" and Path(meta["source"]) == (run / "hf_init").resolve()
    assert "token_cache" in json.loads((run / "data.json").read_text())["fingerprint"]
    # only the adapters moved: every base tensor equals the source's
    base = {k: v for k, v in ckpt.load_tensors(higgs / "model.safetensors").items()}
    trained = ckpt.load_weights(last)
    assert not any(".lora_" in k and trained[k].dtype != torch.float32 for k in trained)
    for name, value in trained.items():
        if ".lora_" not in name:
            assert torch.equal(value, base[plain_name(name)]), name
    assert any(".lora_B." in n and trained[n].abs().max() > 1e-4 for n in trained)  # B starts at zero
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    valid = [h for h in history if h["stage"] == "valid"]
    assert valid and {"ce_q0", "ce_q3", "loss", "ppl"} <= set(valid[-1])
    samples = json.loads((run / "samples" / "epoch_0002" / "samples.json").read_text())["samples"]
    assert samples and samples[0]["text"]
    # the run loads as a plain transformers model (LoRA merged) = transformers + peft's adapter folder
    loaded = load_higgs(run)
    assert type(loaded.model).__name__ == "HiggsAudioV2ForConditionalGeneration" and loaded.run_config is not None
    assert loaded.source == (run / "hf_init").resolve()
    adapter = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str((run / "hf_init").resolve()) and adapter["r"] == 4
    reference = PeftModel.from_pretrained(
        HiggsAudioV2ForConditionalGeneration.from_pretrained(run / "hf_init"), run / "adapter"
    ).eval()
    batch = a_batch(loaded)
    with torch.no_grad():
        ours, theirs = loaded.model(**batch).logits, reference(**batch).logits
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    plain = HiggsAudioV2ForConditionalGeneration.from_pretrained(higgs).eval()
    with torch.no_grad():
        assert (plain(**batch).logits - ours).abs().max() > 1e-4  # the adapters do change the model
    # one import per source in the runs folder's cache, hard-linked into the run
    (shared,) = (tmp_path / "runs" / ".hf_imports").iterdir()
    weights = run / "hf_init" / "model.safetensors"
    assert weights.stat().st_ino == (shared / "model.safetensors").stat().st_ino
    # the same command again resumes (nothing left to do) and reuses the import
    stamp = (run / "hf_init" / "manifest.json").stat().st_mtime
    assert train(tmp_path / "runs", f"data={data}", f"init_from=hf:{higgs}", capsys=capsys) == run
    assert (run / "hf_init" / "manifest.json").stat().st_mtime == stamp


def test_full_finetune_with_and_without_the_text_loss(higgs_text_head, data, tmp_path, capsys):
    source = ckpt.load_tensors(higgs_text_head / "model.safetensors")
    imported = tmp_path / "imported"  # init_from: a folder written by `tunesmith import hf`
    assert main(["import", "hf", str(higgs_text_head), "--out", str(imported)]) == 0
    common = [f"data={data}", f"init_from={imported}", "finetune.mode=full", "train.epochs=1"]
    first = train(tmp_path / "a", *common, "train.ema.enabled=true", "train.ema.decay=0.5", capsys=capsys)
    audio_only = ckpt.load_weights(first / "checkpoints" / "last", ema=False)
    assert torch.equal(audio_only["text_lm_head.weight"], source["text_lm_head.weight"])  # frozen: no text loss
    assert not torch.equal(audio_only["audio_lm_head.weight"], source["audio_lm_head.weight"])
    averaged = ckpt.load_weights(first / "checkpoints" / "last")  # EMA weights, preferred for inference
    assert not torch.equal(averaged["audio_lm_head.weight"], audio_only["audio_lm_head.weight"])
    from tunesmith.models.higgs.model import load_higgs

    loaded = load_higgs(first, which="last")  # a full run loads with its (EMA) weights and its text head
    state = loaded.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in averaged.items())
    run = train(tmp_path / "b", *common, "text_loss=true", "text_loss_weight=0.5", capsys=capsys)
    with_text = ckpt.load_weights(run / "checkpoints" / "last")
    assert not torch.equal(with_text["text_lm_head.weight"], source["text_lm_head.weight"])
    valid = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    valid = [h for h in valid if h["stage"] == "valid"][-1]
    assert {"text_ce", "audio_ce"} <= set(valid) and valid["text_ce"] > 0
    assert valid["loss"] > valid["audio_ce"]  # loss = (audio sum + 0.5 × text sum) / audio tokens
    assert not (run / "adapter").exists()


def test_text_loss_without_a_text_head_says_how(higgs, data, tmp_path, capsys):
    code = main(["train", "tts", "tiny", *COMMON, f"data={data}", f"init_from=hf:{higgs}", "text_loss=true",
                 "--runs-dir", str(tmp_path / "runs")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "has no text head" in err and "text_loss=false" in err


def test_init_from_another_model_type_names_what_was_found(data, tmp_path, capsys):
    other = tmp_path / "musicgen"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "musicgen"}))
    code = main(["train", "tts", "tiny", *COMMON, f"data={data}", f"init_from=hf:{other}",
                 "--runs-dir", str(tmp_path / "runs")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "model_type 'musicgen'" in err and "higgs_audio_v2" in err
    code = main(["train", "tts", "tiny", *COMMON, f"data={data}", "--runs-dir", str(tmp_path / "runs")])
    assert code == 2 and "init_from= is required" in capsys.readouterr().err


@pytest.mark.parametrize("preset", ["higgs-lora", "higgs-full", "tiny"])
def test_presets_resolve(preset):
    from tunesmith.config import resolve
    from tunesmith.tasks.tts import TTSTaskConfig

    cfg = resolve("tts", TTSTaskConfig, preset, ["data=/d", "init_from=hf:/m"]).config
    assert cfg.finetune.mode == ("full" if preset == "higgs-full" else "lora")
    assert not cfg.text_loss and cfg.dataset.reference == "none"


def test_items_are_the_spoken_sentences_with_same_speaker_references(speech, higgs, tmp_path):
    from tunesmith.tasks import build_solver

    source, data = speech
    overrides = [*COMMON, f"data={data}", f"init_from=hf:{higgs}", "dataset.reference=same_speaker"]
    solver = build_solver("tts", "tiny", overrides, runs_dir=tmp_path)
    solver.setup()
    spoken = {(clip.text, clip.speaker) for clip in source.clips}
    for split, dataset in solver.datasets.items():
        for position in range(len(dataset)):
            item = dataset[(position, 7)]
            assert (item.text, item.speaker) in spoken, split
            if item.reference_text is not None:
                assert (item.reference_text, item.speaker) in spoken and item.reference_text != item.text
    train = solver.datasets["train"]
    assert len(train) + len(solver.datasets["valid"]) == len(source.clips)
    assert sum(train[(p, 7)].reference_codes is not None for p in range(len(train))) >= 2


def test_init_from_a_tts_run_continues_from_its_merged_weights(higgs, data, tmp_path, capsys):
    """A LoRA run's checkpoint as init_from: its weights with LoRA merged become the next run's base (exported once
    per checkpoint content into the runs folder's import cache and reused)."""
    from safetensors.torch import load_file

    from tunesmith.models.higgs.model import load_higgs

    runs = tmp_path / "runs"
    first = train(runs, f"data={data}", f"init_from=hf:{higgs}", capsys=capsys)
    second = train(runs, f"data={data}", f"init_from={first}", "finetune.mode=full", "train.epochs=0", capsys=capsys)
    merged = load_higgs(first).model.state_dict()
    base = load_file(str(second / "hf_init" / "model.safetensors"))
    assert set(base) <= set(merged)
    for name, tensor in base.items():
        torch.testing.assert_close(tensor, merged[name], rtol=0, atol=1e-6, msg=name)
    original = load_file(str(first / "hf_init" / "model.safetensors"))
    adapted = [n for n in base if n.endswith("q_proj.weight")]
    assert adapted and any(not torch.equal(base[n], original[n]) for n in adapted)  # the trained adapters, merged
    caches = sorted(p.name for p in (runs / ".hf_imports").iterdir())
    assert sum(name.startswith("run-") for name in caches) == 1
    third = train(
        runs,
        f"data={data}",
        f"init_from={first / 'checkpoints' / 'best'}",
        "train.epochs=0",
        "train.seed=1",
        capsys=capsys,
    )  # the checkpoint folder itself; the merge is reused
    assert sorted(p.name for p in (runs / ".hf_imports").iterdir()) == caches
    assert (third / "hf_init" / "model.safetensors").is_file()
