#!/usr/bin/env bash
# Sets up a fresh machine (scripts/setup.sh) and the [bench] extra, then runs the benchmark: jitfuse
# vs the alternatives (oneDNN fuser, stock int8, OpenVINO, ONNX Runtime), interleaved, ratios
# printed and written to bench/results/ (table and PNG chart).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
# The [bench] extra's runtimes (OpenVINO, NNCF, ONNX Runtime), without rebuilding jitfuse.
python - <<'PY' | xargs python -m pip install -q
import tomllib
print(" ".join(f"'{r}'" for r in tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["bench"]))
PY
python bench/run.py "$@"
