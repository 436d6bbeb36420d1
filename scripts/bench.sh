#!/usr/bin/env bash
# Sets up a fresh machine (scripts/setup.sh), then runs the benchmark: jitfuse vs stock PyTorch,
# interleaved, ratios printed and written to bench/results/ (table and PNG chart).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
python bench/run.py "$@"
