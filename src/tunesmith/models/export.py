"""Model directories that need model knowledge: exporting an LM with its codec/ and t5/ companions,
and checking Hugging Face flavoured directories (``model_type: "musicgen"``) through ``tunesmith.models.hf``.

The tunesmith model-directory format itself (constants, config.json, checks) is
:mod:`tunesmith.artifacts.modeldir`.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from tunesmith.artifacts import checkpoint as ckpt
from tunesmith.artifacts import modeldir
from tunesmith.artifacts.modeldir import FORMAT_VERSION as FORMAT_VERSION  # re-exported
from tunesmith.artifacts.modeldir import TUNESMITH_PREFIX as TUNESMITH_PREFIX  # re-exported
from tunesmith.errors import UserError
from tunesmith.fileio import swap_folder

log = logging.getLogger(__name__)


def export_tunesmith(
    source: str | Path, out: str | Path, *, which: str = "best", ema: bool | None = None, force: bool = False
) -> Path:
    """Write a tunesmith model directory from a run, checkpoint or model dir (EMA weights preferred).

    An existing ``out`` is replaced only when it is a model directory tunesmith wrote and ``force`` is
    given (:func:`~tunesmith.artifacts.modeldir.guard_output`)."""
    folder = ckpt.find_checkpoint(source, which=which)
    out = Path(out)
    modeldir.guard_output(out, force=force)
    config = ckpt.read_config(folder)
    modeldir.side_files(folder, config)  # every listed side file stays inside: checked before anything is written
    companions = _copy_lm_companions if modeldir.task_of(config) == "lm" else None
    with swap_folder(out) as tmp:
        modeldir.write_model_dir(folder, tmp, ema=ema, companions=companions)
    return out


def _copy_lm_companions(config: dict, folder: Path, out: Path) -> None:
    """An LM needs its codec (and a T5 text encoder when it uses one): put them inside the export
    as ``codec/`` and ``t5/``, where the generator looks first, so the directory stands on its own."""
    from tunesmith.models.codec.loading import resolve_codec_path

    if (folder / "codec").is_dir():
        shutil.copytree(folder / "codec", out / "codec")
    elif config.get("codec"):
        run_dir = folder.parent.parent if folder.parent.name == "checkpoints" else None
        codec = resolve_codec_path(str(config["codec"]), folder, run_dir)
        if codec is None:
            log.warning(
                "export: the LM's codec %r was not found; the export will need --codec to generate", config["codec"]
            )
        elif (codec / "checkpoints").is_dir() or (codec / ckpt.STATE).is_file():
            export_tunesmith(codec, out / "codec")
        else:
            shutil.copytree(codec, out / "codec")
    conditioner = (config.get("model") or {}).get("conditioner") or {}
    t5 = Path(str(conditioner.get("t5_path") or ""))
    if conditioner.get("text") == "t5":
        source = folder / "t5" if (folder / "t5").is_dir() else t5
        if source.is_dir():
            shutil.copytree(source, out / "t5")


def verify_model_dir(path: str | Path) -> list[str]:
    """Every problem with a model or checkpoint directory, named precisely; empty when sound.

    A bad ``model_type`` or ``format_version`` never hides a checksum problem: every check that can
    still run does."""
    path = Path(path)
    config, problems = modeldir.read_model_config(path)
    if config is None:
        return problems
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        return problems + modeldir.verify_manifests(path)
    if modeldir.is_tunesmith_config(config):
        return problems + modeldir.verify_tunesmith_dir(path, config)
    try:
        from tunesmith.models.hf.verify import verify_hf_dir
    except ImportError:
        return [*problems, f"{path / ckpt.CONFIG}: model_type {model_type!r} is not a tunesmith model"]
    return problems + verify_hf_dir(path)


def require_valid(path: str | Path) -> Path:
    problems = verify_model_dir(path)
    if problems:
        raise UserError("model directory check failed:\n  - " + "\n  - ".join(problems))
    return Path(path)
