#!/usr/bin/env bash
# The C++ and Python tests against a jitfuse built with AddressSanitizer + UndefinedBehaviorSanitizer
# (-DJITFUSE_SANITIZE=ON). The sanitized package goes to build/sanitize/site (the normal install is
# untouched); Python loads the sanitizer runtimes first through LD_PRELOAD.
#   bash scripts/sanitize.sh [pytest args]     e.g. bash scripts/sanitize.sh -k "not bert"
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh

out=build/sanitize
python -m pip install -q --no-deps --no-build-isolation --upgrade --target "$out/site" . \
  -C build-dir="$out/build" -C cmake.define.JITFUSE_SANITIZE=ON -C cmake.build-type=RelWithDebInfo

runtimes="$(g++ -print-file-name=libasan.so):$(g++ -print-file-name=libubsan.so)"
export PYTHONPATH="$PWD/$out/site${PYTHONPATH:+:$PYTHONPATH}"
# Leaks: CPython and torch keep allocations until exit; the RSS test covers growth instead.
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"

cmake -S tests/cpp -B "$out/cpp-tests" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_PREFIX_PATH="$PWD/$out/site/jitfuse" -DPython_EXECUTABLE="$(command -v python)"
cmake --build "$out/cpp-tests"
# cmake_install_package rebuilds the library unsanitized: the normal test run covers it.
(cd "$out/cpp-tests" && LD_PRELOAD="$runtimes" ctest --output-on-failure -E cmake_install_package)

# test_serve is left out: Ray's own daemons and workers would inherit the sanitizer runtimes.
LD_PRELOAD="$runtimes" python -m pytest tests/python -q -p no:cacheprovider --ignore=tests/python/test_serve.py "$@"
