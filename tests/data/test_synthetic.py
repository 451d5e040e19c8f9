"""Built-in synthetic music: deterministic, well-levelled, captions that match the audio, styles that differ."""

from __future__ import annotations

import numpy as np
import pytest

from tunesmith.data.synthetic import MODES, NOTE_NAMES, STYLES, render_track, style_of, track_metadata, track_params

SR = 16000


def test_same_parameters_same_audio_and_seed_changes_it():
    a = render_track(track_params(3, 0, 3.0), SR)
    b = render_track(track_params(3, 0, 3.0), SR)
    c = render_track(track_params(3, 1, 3.0), SR)
    assert a.dtype == np.float32 and a.shape == (1, 3 * SR)
    np.testing.assert_array_equal(a, b)
    assert a.shape != c.shape or not np.array_equal(a, c)


@pytest.mark.parametrize("index", range(len(STYLES)))
def test_level_and_shape(index):
    x = render_track(track_params(index, 0, 2.5), 32000, channels=2)
    assert x.shape == (2, 80000) and np.isfinite(x).all()
    rms_db = 20 * np.log10(np.sqrt(np.mean(x**2)))
    assert np.abs(x).max() <= 0.951 and -24 < rms_db < -15
    assert not np.array_equal(x[0], x[1]) or STYLES[style_of(index, 0)].genre == "classical"


def test_styles_are_balanced_per_block():
    for block in range(3):
        styles = sorted(style_of(block * len(STYLES) + i, 7) for i in range(len(STYLES)))
        assert styles == list(range(len(STYLES)))


def test_caption_is_built_from_parameters():
    for i in range(12):
        p = track_params(i, 0, 4.0)
        meta = track_metadata(p)
        style = STYLES[p["style"]]
        key = f"{NOTE_NAMES[p['tonic']]} {p['mode']}"
        assert meta["genre"] == style.genre and meta["key"] == key and meta["bpm"] == p["bpm"]
        assert style.tempo[0] <= p["bpm"] <= style.tempo[1] and p["mode"] in style.modes
        for part in (style.genre, f"{p['bpm']} bpm", key, *p["moods"]):
            assert part in meta["description"]
        assert ("drums" in meta["description"]) == (style.drums is not None)


def _band_features(x: np.ndarray) -> np.ndarray:
    """Log energy in 12 log-spaced bands and the spread of frame energy (rhythm), per clip."""
    frames = x[: len(x) // 512 * 512].reshape(-1, 512) * np.hanning(512)
    spec = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    freqs = np.fft.rfftfreq(512, 1 / SR)
    edges = np.geomspace(60, SR / 2, 13)
    bands = np.stack(
        [spec[:, (freqs >= lo) & (freqs < hi)].sum(1) for lo, hi in zip(edges[:-1], edges[1:], strict=True)], 1
    )
    log_bands = np.log(bands + 1e-8)
    high_flux = np.abs(np.diff(log_bands[:, -4:], axis=0)).mean()
    return np.concatenate([log_bands.mean(0), [high_flux]])


def test_styles_are_separable_from_audio():
    """A nearest-centroid classifier on simple spectral features tells the styles apart on unseen tracks:
    the text condition (style) is learnable from the audio."""
    train = list(range(0, 36))
    test = list(range(36, 60))
    feats = {i: _band_features(render_track(track_params(i, 0, 4.0), SR)[0]) for i in train + test}
    labels = {i: style_of(i, 0) for i in train + test}
    x_train = np.stack([feats[i] for i in train])
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    centroids = np.stack([((x_train - mean) / std)[[labels[i] == s for i in train]].mean(0) for s in range(6)])
    correct = 0
    for i in test:
        z = (feats[i] - mean) / std
        correct += int(np.argmin(((centroids - z) ** 2).sum(1)) == labels[i])
    assert correct / len(test) >= 0.9


def _onset_envelope(x: np.ndarray, hop: int = 160) -> np.ndarray:
    frames = x[: len(x) // hop * hop].reshape(-1, hop)
    energy = np.log(np.square(frames).sum(1) + 1e-8)
    return np.maximum(np.diff(energy), 0)


@pytest.mark.parametrize("genre", ["electronic", "rock", "chiptune"])
def test_tempo_in_caption_matches_the_audio(genre):
    index = next(i for i in range(30) if STYLES[style_of(i, 0)].genre == genre)
    p = track_params(index, 0, 8.0)
    env = _onset_envelope(render_track(p, SR)[0])
    env = env - env.mean()
    ac = np.correlate(env, env, "full")[len(env) - 1 :]
    beat = 60.0 / p["bpm"] * 100  # in 10 ms frames
    lags = np.arange(int(beat * 0.6), int(beat * 1.4) + 1)
    best = lags[np.argmax(ac[lags])]
    assert abs(best - beat) <= max(1.0, 0.03 * beat)


@pytest.mark.parametrize("genre", ["classical", "ambient"])
def test_key_in_caption_matches_the_audio(genre):
    """Most pitch-class energy lies on the notes of the captioned key and mode."""
    index = next(i for i in range(30) if STYLES[style_of(i, 0)].genre == genre)
    p = track_params(index, 0, 8.0)
    x = render_track(p, SR)[0]
    spec = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / SR)
    keep = (freqs > 50) & (freqs < 2000)
    pitch_class = np.round(12 * np.log2(freqs[keep] / 440.0) + 69).astype(int) % 12
    chroma = np.bincount(pitch_class, weights=spec[keep], minlength=12)
    scale = {(p["tonic"] + step) % 12 for step in MODES[p["mode"]]}
    assert chroma[sorted(scale)].sum() / chroma.sum() > 0.85
