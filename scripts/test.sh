#!/usr/bin/env bash
# Sets up (scripts/setup.sh), then runs the whole test suite: GoogleTest, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
bash scripts/setup.sh

GENERATOR=$(command -v ninja >/dev/null && echo "-G Ninja" || echo "")
cmake -S . -B build/cpp $GENERATOR -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/cpp
(cd build/cpp && ctest --output-on-failure)

# `import effattn` resolves to the installed package (the source lives under python/).
$PY -m pytest tests -q -p no:cacheprovider "$@"
