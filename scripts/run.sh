#!/usr/bin/env bash
# Sets up (scripts/setup.sh), then runs the main job: `python -m effattn`
# (self-check of every op against its reference, then a timing table).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cd /tmp && ${PYTHON:-python3} -m effattn "$@"
