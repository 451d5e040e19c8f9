"""What this installation and machine have: versions, devices, memory, disk, thread policy, and what is
missing for which feature (the report `tunesmith doctor` prints)."""

from __future__ import annotations

import importlib
import platform
import shutil
import sys
from pathlib import Path

# feature → (modules it needs, the install line that fixes it)
FEATURES: dict[str, tuple[tuple[str, ...], str]] = {
    "training engine": (("torch", "numpy", "safetensors", "yaml", "rich"), "pip install tunesmith"),
    "audio decoding (wav/flac/mp3/ogg)": (("soundfile", "soxr"), "pip install soundfile soxr"),
    "audio decoding (m4a/aac/opus)": (("av",), "pip install av"),
    "TensorBoard logging": (("tensorboard",), "pip install tensorboard"),
    "Hugging Face MusicGen import/export, T5 text": (("transformers", "sentencepiece"), "pip install 'tunesmith[hf]'"),
    "LoRA fine-tuning": (("peft",), "pip install 'tunesmith[hf]'"),
    "HTTP server": (("fastapi", "uvicorn"), "pip install 'tunesmith[serve]'"),
    "MIDI data and models": (("symusic",), "pip install 'tunesmith[midi]'"),
    "MidiTok REMI tokenizer": (("miditok",), "pip install 'tunesmith[midi]'"),
    "wandb logging": (("wandb",), "pip install 'tunesmith[wandb]'"),
}
PROGRAMS: dict[str, str] = {
    "fluidsynth": "MIDI → wav rendering (apt-get install fluidsynth fluid-soundfont-gm)",
    "espeak-ng": "speech data for the tts-tiny preset (apt-get install espeak-ng)",
    "chromium": "review-page browser tests (apt-get install chromium chromium-driver)",
}


def _version(module: str) -> str | None:
    try:
        mod = importlib.import_module(module)
    except Exception:  # noqa: BLE001 - any import failure means "not usable"
        return None
    return str(getattr(mod, "__version__", "installed"))


def collect(requested_threads: int | None = None) -> dict:
    """The whole report as plain data; ``requested_threads`` is the entry point's ``--threads``."""
    import torch

    from tunesmith import __version__

    report: dict = {
        "tunesmith": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "cpu_threads": torch.get_num_threads(),
        "threads": _thread_report(requested_threads),
        "devices": [],
        "disk_free_gb": round(shutil.disk_usage(Path.cwd()).free / 1e9, 1),
    }
    try:
        import os

        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        report["ram_gb"] = round(pages * page_size / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        report["ram_gb"] = None
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            free, total = torch.cuda.mem_get_info(i)
            report["devices"].append(
                {
                    "index": i,
                    "name": props.name,
                    "memory_gb": round(total / 2**30, 1),
                    "free_gb": round(free / 2**30, 1),
                    "bf16": torch.cuda.is_bf16_supported(),
                    "capability": f"{props.major}.{props.minor}",
                }
            )
    report["precision_auto"] = (
        "bf16" if report["devices"] and report["devices"][0]["bf16"] else ("fp16" if report["devices"] else "fp32")
    )
    features = {}
    for feature, (modules, fix) in FEATURES.items():
        missing = [m for m in modules if _version(m) is None]
        features[feature] = {"ok": not missing, "missing": missing, "fix": fix if missing else ""}
    report["features"] = features
    report["packages"] = {
        m: _version(m)
        for m in (
            "transformers",
            "peft",
            "soundfile",
            "soxr",
            "av",
            "symusic",
            "miditok",
            "fastapi",
            "uvicorn",
            "tensorboard",
            "wandb",
        )
    }
    report["programs"] = {name: shutil.which(name) for name in PROGRAMS}
    for forbidden in ("torchaudio", "xformers"):
        if _version(forbidden):
            report.setdefault("notes", []).append(f"{forbidden} is installed; tunesmith does not need it")
    return report


def _thread_report(requested: int | None = None) -> dict:
    """The thread policy every command applies (see :mod:`tunesmith.runtime`), with the facts behind it."""
    from tunesmith.runtime import cpu_budget, load_warning, thread_policy

    policy = thread_policy(requested)
    return {
        "threads": policy.threads,
        "wait_policy": policy.wait_policy,
        "reasons": list(policy.reasons),
        "usable_cpus": cpu_budget().cpus,
        "load_warning": load_warning(policy.threads, cpu_budget().cpus, policy.busy),
    }
