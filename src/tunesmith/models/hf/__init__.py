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
``load_codec(DIR)`` accepts transformers ``encodec`` and ``musicgen`` directories. This package imports it
only when torch is already imported, so that ``tunesmith --help`` (which imports
``tunesmith.models.hf.cli``) never pays for torch; the commands of this package import it themselves.
"""

import sys

if "torch" in sys.modules:
    import tunesmith.models.hf.encodec  # noqa: F401  (registers the codec loader)
