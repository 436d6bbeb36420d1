#!/usr/bin/env bash
# Sets up a fresh machine (scripts/setup.sh), then runs every test: the C++ tests (ctest, built
# against the installed package) and the Python tests (pytest).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh

site=$(python -c "import jitfuse, os; print(os.path.dirname(jitfuse.__file__))")
cmake -S tests/cpp -B build/cpp-tests -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$site" \
  -DPython_EXECUTABLE="$(command -v python)"
cmake --build build/cpp-tests
(cd build/cpp-tests && ctest --output-on-failure)

python -m pytest tests/python -q -p no:cacheprovider "$@"
