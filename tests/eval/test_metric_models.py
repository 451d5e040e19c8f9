"""Tiny random CLAP, AST and Whisper directories (built from configs, save_pretrained): they load, embed
in the right shapes whatever the batching and sample rate, and the metrics built on them behave."""

from __future__ import annotations

import json

import numpy as np
import pytest

from support.evalmodels import RATE, make_ast_dir, make_clap_dir, make_whisper_dir, tone
from tunesmith.errors import UserError
from tunesmith.eval.clap import ClapScorer, clap_score
from tunesmith.eval.embed import AudioClip, HFAudioEmbedder, load_embedder, prepare_audio
from tunesmith.eval.kld import TagClassifier, kl_divergence, paired_kld
from tunesmith.eval.modeldirs import weights_hash
from tunesmith.eval.wer import WhisperTranscriber

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore:At least one mel filter has all zero values"),  # 16 mel bins at 8 kHz
]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("metric_models")
    return {
        "clap": make_clap_dir(root / "clap"),
        "ast": make_ast_dir(root / "ast"),
        "classifier": make_ast_dir(root / "classifier", classifier=True),
        "whisper": make_whisper_dir(root / "whisper"),
    }


def _clips(seconds: float = 1.0, rate: int = RATE) -> list[AudioClip]:
    freqs = [220.0, 330.0, 440.0, 550.0, 660.0]
    return [
        AudioClip(f"c{i}", tone(f, seconds, rate, noise=0.05, seed=i), rate, description=f"tone {i}")
        for i, f in enumerate(freqs)
    ]


@pytest.mark.parametrize("kind", ["clap", "ast", "whisper"])
def test_encoders_load_from_folders_and_batching_does_not_change_embeddings(dirs, kind):
    embedder = load_embedder(dirs[kind], batch_size=4)
    assert isinstance(embedder, HFAudioEmbedder) and embedder.sample_rate == RATE
    clips = _clips(seconds=1.5)
    together = embedder.embed(clips)
    one_by_one = HFAudioEmbedder(dirs[kind], batch_size=1).embed(clips)
    dim = {"clap": 8, "ast": 16, "whisper": 16}[kind]
    frames = {"clap": 2, "ast": 3, "whisper": 75}[kind]  # 1 s CLAP windows, 0.64 s AST windows, Whisper 50/s
    assert [e.shape for e in together] == [(frames, dim)] * len(clips)
    for a, b in zip(together, one_by_one, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert not np.allclose(together[0], together[1])  # different audio, different embeddings


def test_each_model_gets_audio_at_its_own_rate(dirs):
    """A 24 kHz stereo clip is mixed down and resampled to the model's 8 kHz: same embedding as the 8 kHz clip."""
    clip = _clips()[2]
    from tunesmith.audio.io import resample

    hi = AudioClip("hi", np.repeat(resample(clip.wav, RATE, 24000), 2, axis=0), 24000)
    assert prepare_audio(hi, RATE).shape == (1, RATE)
    embedder = load_embedder(dirs["ast"])
    a, b = embedder.embed([clip])[0], embedder.embed([hi])[0]
    assert a.shape == b.shape
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.99


def test_wrong_model_type_is_a_clear_error(dirs, tmp_path):
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    with pytest.raises(UserError) as err:
        load_embedder(bert)
    message = str(err.value)
    assert "'bert' (BertModel)" in message and "audio encoder" in message and "--embedder-dir" in message
    with pytest.raises(UserError, match="clap: .*'audio-spectrogram-transformer'.*ClapModel.*--clap-dir"):
        ClapScorer(dirs["ast"])
    with pytest.raises(UserError, match="kld: .*not a classifier.*--classifier-dir"):
        TagClassifier(dirs["ast"])
    with pytest.raises(UserError, match="wer: .*'clap'.*Whisper.*--whisper-dir"):
        WhisperTranscriber(dirs["clap"])
    with pytest.raises(UserError, match="no such folder"):
        load_embedder(tmp_path / "missing")
    no_processor = tmp_path / "ast_without_processor"
    no_processor.mkdir()
    (no_processor / "config.json").write_text((dirs["ast"] / "config.json").read_text())
    with pytest.raises(UserError, match="preprocessor_config.json"):
        load_embedder(no_processor)


def test_clap_score(dirs):
    rng = np.random.default_rng(0)
    e = rng.standard_normal((6, 8))
    assert clap_score(e, e) == pytest.approx(1.0)
    assert clap_score(e, 3.0 * e) == pytest.approx(1.0)
    assert clap_score(e, -e) == pytest.approx(-1.0)
    assert abs(clap_score(e, rng.standard_normal((6, 8)))) < 0.9
    scorer = ClapScorer(dirs["clap"])
    clips = _clips(seconds=2.5)
    audio = scorer.audio_embeddings(clips)
    text = scorer.text_embeddings([c.description for c in clips])
    assert audio.shape == text.shape == (len(clips), 8)
    np.testing.assert_allclose(np.linalg.norm(audio, axis=1), 1.0, rtol=1e-6)
    mean, per_clip = scorer.score(clips)
    assert len(per_clip) == len(clips) and -1.0 <= mean <= 1.0
    assert mean == pytest.approx(float(np.mean(np.sum(audio * text, axis=1))), rel=1e-6)


def test_kld(dirs):
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(5), size=4)
    assert np.allclose(kl_divergence(p, p), 0.0, atol=1e-12)
    q = rng.dirichlet(np.ones(5), size=4)
    assert (kl_divergence(p, q) > 0).all()
    expected = np.sum(p * np.log(p / q), axis=1)  # no clipping needed for these
    np.testing.assert_allclose(kl_divergence(p, q), expected, rtol=1e-5)
    classifier = TagClassifier(dirs["classifier"])
    assert classifier.labels == [f"tag{i}" for i in range(5)]
    clips = _clips(seconds=1.5)
    probs = classifier.predict(clips)
    assert probs.shape == (len(clips), 5)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    same, per_pair = paired_kld(probs, classifier.predict(clips))
    assert same == pytest.approx(0.0, abs=1e-9) and len(per_pair) == len(clips)
    other, _ = paired_kld(probs, probs[::-1])
    assert other > 0


def test_whisper_transcribes_each_clip(dirs):
    whisper = WhisperTranscriber(dirs["whisper"], batch_size=2, max_new_tokens=6)
    clips = _clips(seconds=0.8)
    texts = whisper.transcribe(clips)
    assert len(texts) == len(clips) and all(isinstance(t, str) for t in texts)
    assert WhisperTranscriber(dirs["whisper"], batch_size=1, max_new_tokens=6).transcribe(clips) == texts


def test_weights_hash_follows_the_weights(dirs, tmp_path):
    import shutil

    copy = tmp_path / "ast"
    shutil.copytree(dirs["ast"], copy)
    assert weights_hash(copy) == weights_hash(dirs["ast"])
    (copy / "config.json").write_text(
        (copy / "config.json").read_text().replace('"hidden_dropout_prob": 0.0', '"hidden_dropout_prob": 0.1')
    )
    assert weights_hash(copy) != weights_hash(dirs["ast"])


def test_the_suite_runs_every_metric_with_its_model_dir(dirs, tmp_path):
    from tunesmith.eval.suite import MetricModels, evaluate_clips

    refs = [AudioClip(c.name, c.wav, c.sample_rate, c.description, "hello world") for c in _clips()]
    gens = [AudioClip(f"g{i}", tone(300.0 + 50 * i, 1.0, 16000), 16000, c.description) for i, c in enumerate(refs)]
    models = MetricModels(str(dirs["ast"]), str(dirs["clap"]), str(dirs["classifier"]), str(dirs["whisper"]))
    loaded: dict = {}
    report = evaluate_clips(
        refs, gens, ["fad", "clap", "kld", "chroma", "wer"], models, cache_dir=tmp_path, reference_id={"r": 1},
        loaded=loaded,
    )  # fmt: skip
    assert not [r.skipped for r in report.results if r.skipped]
    values = report.scalars()
    assert {"fad", "clap", "kld", "chroma", "wer", "cer"} <= set(values)
    assert -1 <= values["clap"] <= 1 and values["kld"] > 0 and values["wer"] >= 0
    assert values["kld_both"] == pytest.approx(values["kld"] + values["kld_qp"]) and values["kld_qp"] > 0
    by_name = {r.name: r for r in report.results}
    assert by_name["fad"].model.startswith("audio-spectrogram-transformer:") and by_name["fad"].clips == 5
    assert len(by_name["wer"].details["transcripts"]) == 5 and by_name["wer"].details["words"] == 10
    assert set(loaded) == {"fad", "clap", "kld", "wer"}  # kept for the next call (the training stage)
    again = evaluate_clips(refs, gens, ["fad"], models, cache_dir=tmp_path, reference_id={"r": 1}, loaded=loaded)
    assert again.results[0].details["reference_cached"] and again.scalars()["fad"] == pytest.approx(values["fad"])
