#!/usr/bin/env bash
# Create benchmarks/.work/audiocraft-venv: AudioCraft 1.3.0 over the local CPU torch 2.13.0, for peer benchmarks.
#
#   bash benchmarks/peers/setup_audiocraft.sh          # idempotent: a second run only re-checks
#   PYTHON=python3.11 bash benchmarks/peers/setup_audiocraft.sh
#
# What it does (see benchmarks/peers/README.md for why):
#   1. a venv with torch==2.13.0 (the CPU wheel this machine serves; never any other torch);
#   2. the AudioCraft 1.3.0 sdist (PyPI has no wheel), installed with --no-deps; its config/ folder
#      (Hydra configs) extracted to benchmarks/.work/audiocraft-config;
#   3. AudioCraft's non-torch requirements, pinned below, installed with `-c` a constraints file that
#      pins torch==2.13.0 so nothing can upgrade or replace it. Left out on purpose: torchaudio,
#      xformers, torchvision, torchtext (torch-version-locked builds; the first two are replaced by
#      benchmarks/peers/stubs), gradio (demo UI only), encodec (never imported) and demucs (chroma
#      conditioning only; needs torchaudio);
#   4. a .pth file that puts benchmarks/peers/stubs on the venv's sys.path;
#   5. a check that `import audiocraft` works, torch is still 2.13.0 and the stubs are the ones in use.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
WORK="$ROOT/benchmarks/.work"
VENV="$WORK/audiocraft-venv"
CONFIG_DIR="$WORK/audiocraft-config"
SDIST_DIR="$WORK/audiocraft-sdist"
PY="${PYTHON:-python3}"
AUDIOCRAFT_VERSION="1.3.0"
TORCH_VERSION="2.13.0"

# AudioCraft 1.3.0's requirements.txt minus the packages listed above, at versions checked to work
# together with torch 2.13.0 on Python 3.11 (requirements.txt pins av==11.0.0; any av imports fine here,
# and the benchmarks never decode files).
REQUIREMENTS=(
  "av==18.1.0"
  "einops==0.8.2"
  "flashy==0.0.2"
  "dora-search==0.1.13"
  "hydra-core==1.3.8"
  "hydra_colorlog==1.2.0"
  "omegaconf==2.3.1"
  "julius==0.2.8"
  "num2words==0.5.14"
  "numpy==2.4.6"
  "sentencepiece==0.2.3"
  "spacy==3.8.18"
  "huggingface_hub==2.4.0"
  "tqdm==4.70.1"
  "transformers==5.23.0"
  "librosa==0.11.0"
  "torchmetrics==1.9.0"
  "protobuf==7.36.2"
  "soundfile==0.14.0"
)

# The stamp holds a hash of this script and of the stubs' file list: any edit re-runs the install steps.
stamp_value() {
  { sha256sum "$HERE/setup_audiocraft.sh"; (cd "$HERE" && find stubs -name '*.py' | sort); } | sha256sum | cut -d' ' -f1
}
STAMP="$VENV/.tunesmith-peer-stamp"

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$(stamp_value)" && -x "$VENV/bin/python" ]]; then
  echo "audiocraft venv is up to date: $VENV"
else
  mkdir -p "$WORK"
  if [[ ! -x "$VENV/bin/python" ]]; then
    echo "creating venv $VENV with $PY"
    "$PY" -m venv "$VENV"
  fi
  PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
  "${PIP[@]}" install -q --upgrade pip setuptools wheel

  CONSTRAINTS="$WORK/audiocraft-constraints.txt"
  printf 'torch==%s\n' "$TORCH_VERSION" >"$CONSTRAINTS"

  echo "installing torch==$TORCH_VERSION"
  "${PIP[@]}" install -q "torch==$TORCH_VERSION"

  if [[ ! -f "$SDIST_DIR/audiocraft-$AUDIOCRAFT_VERSION.tar.gz" ]]; then
    echo "downloading the audiocraft $AUDIOCRAFT_VERSION sdist"
    mkdir -p "$SDIST_DIR"
    "${PIP[@]}" download -q --no-deps --no-binary :all: "audiocraft==$AUDIOCRAFT_VERSION" -d "$SDIST_DIR"
  fi
  SDIST="$SDIST_DIR/audiocraft-$AUDIOCRAFT_VERSION.tar.gz"

  if [[ ! -f "$CONFIG_DIR/config.yaml" ]]; then
    echo "extracting AudioCraft's Hydra configs to $CONFIG_DIR"
    rm -rf "$CONFIG_DIR" "$SDIST_DIR/extract"
    mkdir -p "$SDIST_DIR/extract"
    tar -xzf "$SDIST" -C "$SDIST_DIR/extract" "audiocraft-$AUDIOCRAFT_VERSION/config"
    mv "$SDIST_DIR/extract/audiocraft-$AUDIOCRAFT_VERSION/config" "$CONFIG_DIR"
    rm -rf "$SDIST_DIR/extract"
  fi

  echo "installing audiocraft $AUDIOCRAFT_VERSION (--no-deps)"
  "${PIP[@]}" install -q -c "$CONSTRAINTS" --no-deps "$SDIST"

  echo "installing AudioCraft's non-torch requirements (torch constrained to $TORCH_VERSION)"
  "${PIP[@]}" install -q -c "$CONSTRAINTS" "${REQUIREMENTS[@]}"

  SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  echo "$HERE/stubs" >"$SITE/tunesmith_peer_stubs.pth"

  stamp_value >"$STAMP"
fi

# Always verify: torch untouched, AudioCraft importable, torchaudio/xformers resolved to our stubs.
USER="${USER:-$(id -un)}" "$VENV/bin/python" - "$HERE/stubs" "$TORCH_VERSION" "$AUDIOCRAFT_VERSION" <<'EOF'
import os
import sys

stubs, torch_version, audiocraft_version = sys.argv[1:]
import torch

if torch.__version__.split("+")[0] != torch_version:
    sys.exit(f"torch is {torch.__version__}, expected {torch_version}: remove the venv and run the script again")
import torchaudio
import xformers

for module in (torchaudio, xformers):
    if not os.path.realpath(module.__file__).startswith(os.path.realpath(stubs)):
        sys.exit(f"{module.__name__} resolves to {module.__file__}, not to the stubs in {stubs}")
import audiocraft
import audiocraft.solvers  # noqa: F401  (pulls in every module the peer CLI uses)

if audiocraft.__version__ != audiocraft_version:
    sys.exit(f"audiocraft is {audiocraft.__version__}, expected {audiocraft_version}")
print(f"ok: audiocraft {audiocraft.__version__}, torch {torch.__version__}, stubs from {stubs}")
EOF
