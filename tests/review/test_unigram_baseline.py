"""The unigram baseline on an LM run's loss charts: the entropy of each codebook's code frequencies in the
training token cache, in the LM loss's units (nats per real code), checked against independent computations on
a small known token set, and drawn on the review page."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch

from tunesmith.review import code_counts, lm_unigram_baseline, review_run, unigram_cross_entropy

KEY = "0123456789abcdef"
# two segments of a 2-codebook cache, codes [K, F]; bins = 8
SEGMENTS = [np.array([[0, 0, 1, 1], [5, 5, 5, 5]]), np.array([[2, 3], [5, 6]])]
# by hand: codebook 0 has codes 0,1 twice and 2,3 once (p = 1/3, 1/3, 1/6, 1/6); codebook 1 has 5 five times, 6 once
EXPECTED = [
    2 / 3 * math.log(3) + 1 / 3 * math.log(6),
    -(5 / 6 * math.log(5 / 6) + 1 / 6 * math.log(1 / 6)),
]


def write_token_cache(data: Path, segments: list[np.ndarray], bins: int = 8, key: str = KEY) -> Path:
    """A token cache split ``DATA/tokens/KEY/train`` in the layout tunesmith.data.token_cache reads."""
    split = data / "tokens" / key / "train"
    split.mkdir(parents=True)
    k = segments[0].shape[0]
    (split.parent / "codec.json").write_text(json.dumps({"bins": bins, "n_q": k, "frame_rate": 50.0}))
    frames = np.concatenate([s.T for s in segments]).astype(np.int16)  # [frames, K]
    np.save(split / "shard-00000.npy", frames)
    offsets = np.cumsum([0] + [s.shape[1] for s in segments])[:-1]
    index = np.array([[i, 0, int(o), s.shape[1]] for i, (o, s) in enumerate(zip(offsets, segments, strict=True))])
    np.save(split / "index.npy", index.astype(np.int64))
    meta = {"complete": True, "n_q": k, "fingerprint": key * 4, "dataset_dir": str(data / "nowhere"),
            "shard_bytes": [(split / "shard-00000.npy").stat().st_size], "manifest_sha256": "m1"}  # fmt: skip
    (split / "meta.json").write_text(json.dumps(meta))
    return split.parent


def test_entropy_of_a_known_token_set_matches_the_hand_computation_and_the_lm_loss(tmp_path: Path) -> None:
    from tunesmith.data.token_cache import TokenShards
    from tunesmith.models.lm.loss import IGNORE, heads_cross_entropy

    shards = TokenShards(write_token_cache(tmp_path, SEGMENTS), "train")
    counts = code_counts(shards, 2, shards.bins)
    assert counts.shape == (2, 8) and counts[0, :4].tolist() == [2, 2, 1, 1] and counts[1, 5:7].tolist() == [5, 1]
    entropy = unigram_cross_entropy(counts)
    np.testing.assert_allclose(entropy, EXPECTED, rtol=1e-12)
    scipy_stats = pytest.importorskip("scipy.stats")
    np.testing.assert_allclose(entropy, [scipy_stats.entropy(row[row > 0]) for row in counts], rtol=1e-12)

    # the same number is the loss the LM's own loss function gives a model that predicts each code by its
    # frequency: logits = ln p, targets = every code, padding rows (IGNORE) left out of the count
    targets = torch.from_numpy(np.concatenate([s.T for s in SEGMENTS]).astype(np.int64))  # [6, K]
    targets = torch.cat([targets, torch.full((3, 2), IGNORE)])  # padding: not counted
    p = torch.from_numpy(counts / counts.sum(axis=1, keepdims=True))
    logits = torch.where(p > 0, p.log(), torch.full_like(p, -1e9)).float()  # [K, card]
    h = torch.ones(targets.shape[0], 1)
    loss_sum, per_codebook = heads_cross_entropy(h, logits.unsqueeze(-1), targets)
    real = (targets != IGNORE).sum(dim=0)
    np.testing.assert_allclose((per_codebook / real).numpy(), EXPECTED, rtol=1e-5)
    assert float(loss_sum / real.sum()) == pytest.approx(float(np.mean(EXPECTED)), rel=1e-5)  # `loss` = the mean
    for k in range(2):  # and torch's cross-entropy (natural log) per codebook
        valid = targets[:6, k]
        ce = torch.nn.functional.cross_entropy(logits[k].expand(len(valid), -1), valid)
        assert float(ce) == pytest.approx(EXPECTED[k], rel=1e-5)
    assert code_counts(shards, 1).shape[0] == 1  # an LM on fewer codebooks counts only those


def _lm_run(root: Path, history: list[dict], data: Path | None) -> Path:
    run = root / "runs" / "lm" / "base1234"
    for epoch in (1, 2):
        folder = run / "checkpoints" / f"epoch_{epoch:04d}"
        folder.mkdir(parents=True)
        manifest = {"files": {"model.safetensors": {"sha256": f"{epoch:064x}"}}, "epoch": epoch, "step": 100 * epoch}
        (folder / "manifest.json").write_text(json.dumps(manifest))
    config = {"generate": {"prompts": ["calm pad"], "duration": 1.0}, "data": str(data or root / "none")}
    (run / "run.json").write_text(json.dumps({"task": "lm", "signature": "base1234", "config": config}))
    (run / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    if data is not None:
        fingerprint = {"kind": "audio-manifest", "source": str(data), "token_cache": KEY}
        (run / "data.json").write_text(json.dumps({"fingerprint": fingerprint}))
    return run


HISTORY = [
    {"stage": stage, "epoch": e, "step": 100 * e, "loss": 1.2 / e, "ce_q0": 1.0 / e, "ce_q1": 1.4 / e}
    for e in (1, 2, 3)
    for stage in ("train", "valid")
]
for _record in HISTORY:
    _record["ppl"] = math.exp(_record["loss"])


def test_review_page_draws_the_baseline_on_the_loss_charts(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_token_cache(data, SEGMENTS)
    run = _lm_run(tmp_path, HISTORY, data)
    baseline = lm_unigram_baseline(run, json.loads((run / "run.json").read_text())["config"], 2)
    assert baseline is not None and baseline.tokens == 12
    np.testing.assert_allclose(baseline.per_codebook, EXPECTED, rtol=1e-12)

    text = review_run(run, index_only=True).index.read_text()
    svgs = {svg.get("aria-label"): svg for svg in _svgs(text)}
    (loss_line,) = svgs["loss"].findall("line[@class='baseline']")
    assert float(loss_line.get("data-value")) == pytest.approx(np.mean(EXPECTED))
    per_codebook = [
        float(line.get("data-value")) for line in svgs["valid CE per codebook"].findall("line[@class='baseline']")
    ]
    np.testing.assert_allclose(per_codebook, EXPECTED)
    (ppl_line,) = svgs["ppl"].findall("line[@class='baseline']")
    assert float(ppl_line.get("data-value")) == pytest.approx(math.exp(np.mean(EXPECTED)))
    legend = [t.text for t in svgs["loss"].iter("text") if t.get("class") == "legend"]
    assert "unigram (train codes)" in legend
    assert f"{np.mean(EXPECTED):.3f} nats per code" in text and "12 codes" in text

    stored = run / "samples" / "review" / "unigram.json"
    payload = json.loads(stored.read_text())
    payload["per_codebook"] = [9.0, 9.0]  # the stored numbers are used while the cache split is unchanged
    stored.write_text(json.dumps(payload))
    assert lm_unigram_baseline(run, {}, 2).per_codebook == [9.0, 9.0]
    meta_path = data / "tokens" / KEY / "train" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["manifest_sha256"] = "m2"  # re-encoded: counted again
    meta_path.write_text(json.dumps(meta))
    assert lm_unigram_baseline(run, {}, 2).per_codebook == pytest.approx(EXPECTED)


def test_no_baseline_without_the_run_token_cache(tmp_path: Path) -> None:
    run = _lm_run(tmp_path, HISTORY, None)
    assert lm_unigram_baseline(run, {}, 2) is None
    text = review_run(run, index_only=True).index.read_text()
    assert 'class="baseline"' not in text and "nats per code" not in text and "<svg" in text


def _svgs(text: str) -> list[ET.Element]:
    out = []
    start = 0
    while (begin := text.find("<svg", start)) >= 0:
        end = text.index("</svg>", begin) + len("</svg>")
        out.append(ET.fromstring(text[begin:end]))
        start = end
    return out
