"""Generation with a trained LM: prompt items in, audio out (:class:`Generator`), loaded and verified.

The decoding loop itself is :func:`tunesmith.models.lm.generation.generate_codes`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tunesmith.errors import UserError
from tunesmith.models.codec.loading import resolve_codec_path
from tunesmith.models.lm.generation import generate_codes
from tunesmith.models.lm.model import LMModel
from tunesmith.models.sampling import check_sampling

log = logging.getLogger(__name__)


@dataclasses.dataclass
class GenerationItem:
    """One thing to generate; the fields of a prompts.jsonl line."""

    prompt: str = ""
    seed: int = 0
    duration: float = 10.0  # seconds
    cfg: float = 3.0
    temperature: float = 1.0
    top_k: int = 250
    top_p: float = 0.0
    conditions: dict = dataclasses.field(default_factory=dict)  # extra attributes (genre, bpm, ...)

    def condition(self, text_field: str) -> dict:
        cond = dict(self.conditions)
        if self.prompt:
            cond[text_field] = self.prompt
        return cond

    def batch_key(self) -> tuple:
        return (self.duration, self.cfg, self.temperature, self.top_k, self.top_p)


ITEM_FIELDS = {f.name for f in dataclasses.fields(GenerationItem)}


def parse_item(data: dict, defaults: dict | None = None) -> GenerationItem:
    """A prompt dict (with ``defaults`` under it) → GenerationItem; ValueError naming a bad field."""
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    merged = {**(defaults or {}), **data}
    if "text" in merged and "prompt" not in merged:
        merged["prompt"] = merged.pop("text")
    merged.pop("text", None)
    conditions = dict(merged.pop("conditions", None) or {})
    for name in ("genre", "bpm", "key", "instrument", "description", "transcript", "moods", "keywords"):
        if name in merged:
            conditions[name] = merged.pop(name)
    unknown = sorted(set(merged) - ITEM_FIELDS)
    if unknown:
        raise ValueError(f"unknown field(s) {unknown}; allowed: {sorted(ITEM_FIELDS - {'conditions'})}")
    casts: dict[str, Callable[[Any], Any]] = {
        "prompt": str, "seed": int, "duration": float, "cfg": float, "temperature": float, "top_k": int, "top_p": float
    }  # fmt: skip
    values: dict[str, Any] = {}
    for name, value in merged.items():
        if value is None:
            continue
        if isinstance(value, bool) or (name != "prompt" and isinstance(value, (str, list, dict))):
            raise ValueError(f"{name}={value!r}: expected a number")
        values[name] = casts[name](value)
    item = GenerationItem(**values, conditions=conditions)
    if not (item.duration > 0 and math.isfinite(item.duration)):
        raise ValueError(f"duration={item.duration}: must be a positive number of seconds")
    if not math.isfinite(item.cfg) or item.cfg < 0:
        raise ValueError(f"cfg={item.cfg}: must be >= 0")
    check_sampling(item.temperature, item.top_k, item.top_p)
    return item


SPECIAL_TOKENS = ("<pad>", "<unk>")


def attribute_values(model: Any) -> dict[str, list[str]]:
    """Each conditioning attribute of an LM → the values it was trained with (lower case; bpm as buckets)."""
    conditioner = getattr(model, "conditioner", None)
    if conditioner is None:
        return {}
    return {
        name: [tok for tok in module.vocab.get()["vocab"] if tok not in SPECIAL_TOKENS]
        for name, module in conditioner.attributes.items()
    }


def attribute_problems(given: dict[str, Any], known: dict[str, list[str]]) -> list[dict]:
    """Requested attributes checked against the model's: [{field, message, type}] (empty when all is well).

    ``given`` maps attribute → str | list[str] | number (bpm), only those the request set.
    """
    import difflib

    problems = []
    for name, value in given.items():
        if name not in known:
            uses = ", ".join(known) or "no attributes"
            problems.append({"field": name, "type": "attribute_unused",
                             "message": f"this model is not conditioned on {name}; it uses {uses}"})  # fmt: skip
            continue
        if name == "bpm":
            continue  # any positive tempo falls into one of the model's buckets
        for one in value if isinstance(value, list) else [value]:
            token = str(one).strip().lower()
            if token and token not in known[name]:
                close = difflib.get_close_matches(token, known[name], n=3, cutoff=0.5)
                hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
                problems.append({"field": name, "type": "attribute_value",
                                 "message": f"{one!r} is not one of the model's {len(known[name])} {name} values"
                                            f"{hint}"})  # fmt: skip
    return problems


@dataclasses.dataclass
class Result:
    """A generated item: ``wav`` float32 [C, T] at ``sample_rate`` Hz, ``codes`` [K, F], timing ``stats``."""

    item: GenerationItem
    wav: np.ndarray
    sample_rate: int
    codes: np.ndarray
    stats: dict[str, float]


class Generator:
    """An LM and its codec, ready to turn prompt items into audio."""

    def __init__(
        self, model: LMModel, codec: Any, *, config: dict | None = None, name: str = "", max_batch: int = 8
    ) -> None:
        self.model = model.eval()
        self.codec = codec
        self.config = config or {}
        self.name = name
        self.max_batch = max_batch
        if (
            getattr(codec, "bins", model.card) != model.card
            or getattr(codec, "n_q", model.num_codebooks) < model.num_codebooks
        ):
            raise UserError(
                f"the codec ({codec.n_q} codebooks × {codec.bins} bins) does not match the LM "
                f"({model.num_codebooks} × {model.card}); pass the codec the LM was trained with"
            )
        self.text_field = model.cfg.conditioner.text_field

    @property
    def sample_rate(self) -> int:
        return int(self.codec.sample_rate)

    @property
    def frame_rate(self) -> float:
        return float(self.codec.frame_rate)

    @classmethod
    def from_path(
        cls, path: str | Path, device: str = "cpu", *, which: str = "best", codec: str | Path | None = None
    ) -> Generator:
        """Load an LM run folder, checkpoint folder or exported model dir, and the codec it was trained with.

        The codec is the ``codec`` recorded in the LM's config (resolved against the working directory
        and the run folder), a ``codec/`` folder inside an exported model dir, or ``codec`` when given.
        """
        from tunesmith.artifacts import checkpoint as ckpt
        from tunesmith.models.codec import load_codec
        from tunesmith.models.lm.model import LMConfig, build_lm

        folder = ckpt.find_checkpoint(path, which=which)
        raw = ckpt.read_config(folder)
        meta = raw.get("meta") if isinstance(raw.get("meta"), dict) else {}
        if meta.get("task") not in (None, "lm"):
            raise UserError(f"{path}: this is a {meta.get('task')!r} model, not an LM")
        run_cfg = raw.get("config", raw)
        if not isinstance(run_cfg, dict) or not isinstance(run_cfg.get("model"), dict):
            raise UserError(f"{folder}/config.json: no LM 'model' section; is it a tunesmith LM?")
        lm_cfg = _lm_config_from(run_cfg["model"], LMConfig, folder)
        cond = lm_cfg.conditioner
        if cond.text == "t5" and not Path(cond.t5_path).expanduser().is_dir():  # a moved model dir keeps t5/ inside
            for candidate in (folder / cond.t5_path, folder / "t5") if cond.t5_path else (folder / "t5",):
                if candidate.is_dir():
                    lm_cfg = dataclasses.replace(lm_cfg, conditioner=dataclasses.replace(cond, t5_path=str(candidate)))
                    break
        weights = ckpt.load_weights(folder, "model")
        try:
            model = build_lm(lm_cfg, weights)
        except (ValueError, RuntimeError) as err:
            raise UserError(f"{folder}: the weights do not fit the LM config: {err}") from err
        model.to(device)
        codec_path: Path | None
        origin = Path(str(meta.get("exported_from") or folder))  # an export resolves paths like its source
        run_dir = origin.parent.parent if origin.parent.name == "checkpoints" else None
        if codec is not None:
            codec_path = Path(codec)
        elif (folder / "codec").is_dir():
            codec_path = folder / "codec"
        else:
            recorded = str(run_cfg.get("codec") or "")
            codec_path = resolve_codec_path(recorded, folder, run_dir) if recorded else None
            if codec_path is None:
                raise UserError(
                    f"{path}: cannot find the codec this LM was trained with (config says codec={recorded!r}); "
                    "pass it with --codec RUN_OR_MODEL"
                )
        bandwidth = run_cfg.get("codec_bandwidth") or None
        codec_model = load_codec(codec_path, bandwidth=bandwidth, device=device)
        return cls(model, codec_model, config=run_cfg, name=str(path))

    def generate(
        self,
        items: list[GenerationItem | dict],
        *,
        prompt_wavs: list[np.ndarray | None] | None = None,
        on_step: Callable[[int, int], None] | None = None,
    ) -> list[Result]:
        """Items (or prompt dicts) → one Result each, in order; compatible items share one batch.

        ``prompt_wavs``: optional audio [C, T] at :attr:`sample_rate` per item to continue.
        """
        parsed = [it if isinstance(it, GenerationItem) else parse_item(it) for it in items]
        prompts = prompt_wavs or [None] * len(parsed)
        groups: dict[tuple, list[int]] = {}
        for i, it in enumerate(parsed):
            key = it.batch_key() + ((i,) if prompts[i] is not None else ())  # prompted items run alone
            groups.setdefault(key, []).append(i)
        results: list[Result | None] = [None] * len(parsed)
        for indices in groups.values():
            for start in range(0, len(indices), self.max_batch):
                chunk = indices[start : start + self.max_batch]
                prompt = prompts[chunk[0]] if len(chunk) == 1 else None
                for i, res in zip(
                    chunk, self._generate_batch([parsed[i] for i in chunk], prompt, on_step), strict=True
                ):
                    results[i] = res
        return [r for r in results if r is not None]

    @torch.inference_mode()
    def _generate_batch(
        self, items: list[GenerationItem], prompt_wav: np.ndarray | None, on_step: Callable | None
    ) -> list[Result]:
        first = items[0]
        num_frames = max(1, round(first.duration * self.frame_rate))
        device = self.model.embed.weight.device
        prompt_codes = None
        if prompt_wav is not None:
            wav = torch.as_tensor(np.asarray(prompt_wav, dtype=np.float32), device=device)
            wav = wav[None] if wav.dim() == 2 else wav.view(1, 1, -1)
            prompt_codes = self.codec.encode(wav)[:, : self.model.num_codebooks, :num_frames]
        start = time.perf_counter()
        codes = generate_codes(
            self.model,
            [it.condition(self.text_field) for it in items],
            num_frames,
            cfg_coef=first.cfg,
            temperature=first.temperature,
            top_k=first.top_k,
            top_p=first.top_p,
            generator=[torch.Generator().manual_seed(it.seed) for it in items],
            prompt_codes=prompt_codes,
            on_step=on_step,
        )
        lm_seconds = time.perf_counter() - start
        wav = self.codec.decode(codes).float().cpu().numpy()
        seconds = time.perf_counter() - start
        audio_seconds = num_frames / self.frame_rate
        out = []
        for i, it in enumerate(items):
            stats = {
                "seconds": seconds / len(items),
                "batch_seconds": seconds,
                "lm_seconds": lm_seconds,
                "batch_size": float(len(items)),
                "audio_seconds": audio_seconds,
                "real_time_factor": audio_seconds * len(items) / seconds,
                "frames_per_second": num_frames * len(items) / lm_seconds,
            }
            out.append(Result(it, wav[i].astype(np.float32), self.sample_rate, codes[i].cpu().numpy(), stats))
        return out


def _lm_config_from(data: dict, cls: type, where: Path):
    from tunesmith.config import ConfigError, from_dict, merge_into, to_dict

    try:
        merged = merge_into(to_dict(cls()), data, cls)
        return from_dict(cls, merged)
    except (ConfigError, ValueError) as err:
        raise UserError(f"{where}/config.json: bad LM model section: {err}") from err


def load_verified(model: str | Path, device: str, which: str = "best", codec: str | None = None) -> Any:
    """Verify every file of the model (checksums) and load it with its codec; then generate one frame."""
    from tunesmith.artifacts import checkpoint as ckpt

    folder = ckpt.find_checkpoint(model, which=which)
    problems = ckpt.verify_folder(folder)
    if problems:
        raise UserError(f"{folder}: the model failed verification:\n  - " + "\n  - ".join(problems))
    generator = Generator.from_path(folder, device=device, codec=codec)
    warm = GenerationItem(duration=1.0 / generator.frame_rate, seed=0, top_k=0)
    try:
        generator.generate([warm])
    except Exception as err:
        raise UserError(f"{folder}: the model loads but cannot generate ({type(err).__name__}: {err})") from err
    return generator
