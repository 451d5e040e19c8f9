"""Hugging Face MusicGen interop: import, fine-tune (full or LoRA), merge, export, verify.

Modules (transformers and peft are imported inside the functions that need them)::

    hfdir      reading a transformers directory: config.json, (sharded) safetensors, integrity checks
    verify     verify_hf_dir(path) -> list[str]: every problem of a MusicGen/EnCodec directory, named
    convert    MusicGen decoder ⇄ tunesmith LM: configs and weights
    encodec    a transformers EnCodec (or a MusicGen's audio_encoder) as a tunesmith Codec
    importer   import_hf(src, out): a MusicGen directory → a tunesmith model directory (LM + t5/ + codec/)
    inputs     the one place training inputs are built (codes, delay pattern, labels, text tokens)
    lora       LoRA through peft: apply, adapter files, merge
    finetune   fine-tuning settings and the init_from=hf:DIR source of the LM task
    export     export_hf(run, out): a tunesmith LM run → a transformers MusicGen directory
    cli        `tunesmith import hf DIR --out MODEL_DIR`, `tunesmith merge RUN_OR_ADAPTER --out DIR`

Importing :mod:`tunesmith.models.hf.encodec` registers the EnCodec codec loader, so that
``load_codec(DIR)`` accepts transformers ``encodec`` and ``musicgen`` directories. ``tunesmith --help``
imports this package (for ``tunesmith.commands.import_hf``) without torch, and the codec loader imports it
only the first time it meets such a directory — by then this package may already be imported, so
importing it again runs nothing. The registration therefore happens when the codec loading module is
imported: right away when it already is, else through a one-shot import hook.
"""

import importlib.abc
import importlib.util
import sys

_LOADING = "tunesmith.models.codec.loading"


class _RegisterAfterCodecLoading(importlib.abc.MetaPathFinder):
    """Runs :mod:`tunesmith.models.hf.encodec` (the registration) right after the codec loading module."""

    def find_spec(self, fullname, path, target=None):  # noqa: ANN001, ANN201 - importlib's signature
        if fullname != _LOADING:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module):  # noqa: ANN001, ANN202
            exec_module(module)
            importlib.import_module("tunesmith.models.hf.encodec")

        spec.loader.exec_module = exec_then_register
        return spec


if _LOADING in sys.modules:
    import tunesmith.models.hf.encodec  # noqa: F401  (registers the codec loader)
elif not any(isinstance(f, _RegisterAfterCodecLoading) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterAfterCodecLoading())
