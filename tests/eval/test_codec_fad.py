"""FAD on a tunesmith codec's latents (works with nothing extra installed), and the reference-statistics cache."""

from __future__ import annotations

import numpy as np
import pytest

from support.lm import CODEC_RATE, make_codec_dir
from tunesmith.data.synthetic import STYLES, render_track, style_of, track_params
from tunesmith.eval.embed import AudioClip, CodecLatentEmbedder, load_embedder
from tunesmith.eval.frechet import fad, gaussian_stats
from tunesmith.eval.refstats import cached_reference_stats, reference_key

pytestmark = pytest.mark.usefixtures("one_thread")


def _style_clips(style: str, count: int, seconds: float = 2.0) -> list[AudioClip]:
    index = [g.genre for g in STYLES].index(style)
    picks = [i for i in range(200) if style_of(i, 0) == index][:count]
    return [AudioClip(f"{style}{i}", render_track(track_params(i, 0, seconds), CODEC_RATE), CODEC_RATE) for i in picks]


@pytest.fixture(scope="module")
def embedder(tmp_path_factory):
    codec_dir = make_codec_dir(tmp_path_factory.mktemp("codec"))
    found = load_embedder(codec_dir)
    assert isinstance(found, CodecLatentEmbedder)
    return found


def test_codec_latent_fad_separates_styles_more_than_halves_of_one_style(embedder):
    rock, ambient = _style_clips("rock", 8), _style_clips("ambient", 4)
    frames = [e.shape for e in embedder.embed(rock[:2])]
    assert frames == [(2 * int(embedder.codec.frame_rate), 16)] * 2  # [F, D] per clip at the codec's frame rate
    first, second = rock[:4], rock[4:]
    reference = gaussian_stats(np.concatenate(embedder.embed(first)), warn=False)
    same = fad(np.concatenate(embedder.embed(second)), reference, extrapolate=False).fad
    other = fad(np.concatenate(embedder.embed(ambient)), reference, extrapolate=False).fad
    assert other > 3 * same, (same, other)


def test_batching_and_rate_do_not_matter(embedder):
    clips = _style_clips("jazz", 3, seconds=1.0)
    together = embedder.embed(clips)
    embedder.batch_size = 1
    try:
        alone = embedder.embed(clips)
    finally:
        embedder.batch_size = 8
    for a, b in zip(together, alone, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    from tunesmith.audio.io import resample

    up = AudioClip("up", resample(clips[0].wav, CODEC_RATE, 16000), 16000)  # resampled back to 8 kHz inside
    assert embedder.embed([up])[0].shape == together[0].shape


def test_reference_statistics_are_cached_by_reference_and_model(tmp_path, embedder):
    clips = _style_clips("chiptune", 2, seconds=1.0)
    calls = []

    def compute():
        calls.append(1)
        return gaussian_stats(np.concatenate(embedder.embed(clips)), warn=False)

    reference = {"manifest": "sha-1", "segments": ["a", "b"]}
    model = {"kind": embedder.kind, "weights": embedder.weights_hash}
    first, cached = cached_reference_stats(tmp_path, reference, model, compute)
    assert not cached and len(calls) == 1
    again, cached = cached_reference_stats(tmp_path, reference, model, compute)
    assert cached and len(calls) == 1
    np.testing.assert_array_equal(again.sigma, first.sigma)
    assert again.n == first.n
    changed, cached = cached_reference_stats(tmp_path, {**reference, "manifest": "sha-2"}, model, compute)
    assert not cached and len(calls) == 2
    _, cached = cached_reference_stats(tmp_path, reference, {**model, "weights": "other"}, compute)
    assert not cached and len(calls) == 3
    key = reference_key(reference, model)
    assert (tmp_path / f"{key}.npz").is_file() and (tmp_path / f"{key}.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # atomic writes leave no temp files
    (tmp_path / f"{key}.npz").write_bytes(b"damaged")
    _, cached = cached_reference_stats(tmp_path, reference, model, compute)
    assert not cached and len(calls) == 4  # a damaged entry is recomputed, not trusted
