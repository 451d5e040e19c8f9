"""Generation with a trained LM: prompt items in, audio out (:class:`Generator`), loaded and verified.

The decoding loop itself is :func:`tunesmith.models.lm.generation.generate_codes`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tunesmith.errors import UserError
from tunesmith.inference.request import GenerationItem, parse_item
from tunesmith.models.codec.loading import resolve_codec_path
from tunesmith.models.lm.generation import generate_codes
from tunesmith.models.lm.model import LMModel

log = logging.getLogger(__name__)


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
        self,
        model: LMModel,
        codec: Any,
        *,
        config: dict | None = None,
        name: str = "",
        max_batch: int = 8,
        precision: str = "fp32",
    ) -> None:
        self.model = model.eval()
        self.codec = codec
        self.config = config or {}
        self.name = name
        self.max_batch = max_batch
        self.precision = precision  # of the LM's weights (bf16 | fp16 | fp32); the codec runs in fp32
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

    @property
    def defaults(self) -> dict[str, Any]:
        """The generation settings this model starts from (see :mod:`tunesmith.inference.defaults`)."""
        from tunesmith.inference.defaults import generation_defaults

        return generation_defaults(self.config)[0]

    @classmethod
    def from_path(
        cls,
        path: str | Path,
        device: str = "cpu",
        *,
        which: str = "best",
        codec: str | Path | None = None,
        precision: str = "fp32",
    ) -> Generator:
        """Load an LM run folder, checkpoint folder, exported model dir or transformers MusicGen directory
        (imported into the shared cache, see :mod:`tunesmith.inference.sources`), and its codec.

        The codec is the ``codec`` recorded in the LM's config (resolved against the working directory
        and the run folder), a ``codec/`` folder inside an exported model dir, or ``codec`` when given.
        ``precision``: auto | bf16 | fp16 | fp32 for the LM (:mod:`tunesmith.inference.precision`).
        """
        from tunesmith.inference.precision import dtype_of, resolve_precision
        from tunesmith.inference.sources import resolve_model_source
        from tunesmith.models.codec import load_codec
        from tunesmith.models.codec.stereo import as_channels
        from tunesmith.models.lm.loading import build_from, read_lm_checkpoint

        chosen = resolve_precision(precision, device)
        checkpoint = read_lm_checkpoint(resolve_model_source(path), which)
        folder, meta, run_cfg = checkpoint.folder, checkpoint.meta, checkpoint.run_config
        model = build_from(checkpoint, device, dtype_of(chosen))
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
        codec_model = as_channels(load_codec(codec_path, bandwidth=bandwidth, device=device), model.cfg.channels)
        return cls(model, codec_model, config=run_cfg, name=str(path), precision=chosen)

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

    def _check_memory(self, batch: int, num_frames: int, item: GenerationItem, device: torch.device) -> None:
        """Refuse at once (naming the longest duration that fits) what could not be allocated: most of the
        memory a request needs is known before the first step."""
        from tunesmith.models.lm.generation import decoding_bytes
        from tunesmith.runtime import available_memory

        available = available_memory(device)
        if available is None:
            return
        audio = batch * self.codec.channels * round(num_frames / self.frame_rate * self.sample_rate) * 4
        need = decoding_bytes(self.model, batch, num_frames, item.cfg) + audio
        budget = int(0.8 * available)
        if need <= budget:
            return
        per_frame = need / num_frames
        longest = max(0.0, budget / per_frame / self.frame_rate)
        raise UserError(
            f"duration={item.duration:g} s × {batch} item(s) needs about {need / 2**30:.1f} GiB for decoding on "
            f"{device} and {available / 2**30:.1f} GiB is available; the longest that fits is about "
            f"{longest:.0f} s per item (fewer items per batch fit more)"
        )

    @torch.inference_mode()
    def _generate_batch(
        self, items: list[GenerationItem], prompt_wav: np.ndarray | None, on_step: Callable | None
    ) -> list[Result]:
        first = items[0]
        num_frames = max(1, round(first.duration * self.frame_rate))
        device = self.model.embed.weight.device
        self._check_memory(len(items), num_frames, first, device)
        prompt_codes = None
        if prompt_wav is not None:
            wav = torch.as_tensor(np.asarray(prompt_wav, dtype=np.float32), device=device)
            wav = wav[None] if wav.dim() == 2 else wav.view(1, 1, -1)
            prompt_codes = self.codec.encode(wav)[:, : self.model.num_codebooks, :num_frames]
        start = time.perf_counter()
        from tunesmith.inference.melody import resolve_melodies

        conditions = resolve_melodies([it.condition(self.text_field) for it in items], self.model.cfg.conditioner)
        codes = generate_codes(
            self.model,
            conditions,
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
        if not np.isfinite(wav).all():
            raise RuntimeError(f"the decoded audio is not finite (precision {self.precision}); try --precision fp32")
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


def load_verified(
    model: str | Path, device: str, which: str = "best", codec: str | None = None, precision: str = "fp32"
) -> Any:
    """Verify every file of the model (checksums) and load it with its codec; then generate one frame.

    A transformers MusicGen directory is imported into the shared cache first (verified there).
    """
    from tunesmith.artifacts import checkpoint as ckpt
    from tunesmith.inference.sources import resolve_model_source

    folder = ckpt.find_checkpoint(resolve_model_source(model), which=which)
    problems = ckpt.verify_folder(folder)
    if problems:
        raise UserError(f"{folder}: the model failed verification:\n  - " + "\n  - ".join(problems))
    generator = Generator.from_path(folder, device=device, codec=codec, precision=precision)
    warm = GenerationItem(duration=1.0 / generator.frame_rate, seed=0, top_k=0)
    try:
        generator.generate([warm])
    except Exception as err:
        raise UserError(f"{folder}: the model loads but cannot generate ({type(err).__name__}: {err})") from err
    return generator
