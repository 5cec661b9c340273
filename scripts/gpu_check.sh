#!/usr/bin/env bash
# The first thing to run on a lent NVIDIA GPU (docs/backends-and-speed.md#first-thing-on-a-gpu): PyTorch
# preinstalled, no network, under 8 minutes; prints one JSON object on stdout (progress on stderr).
#   bash scripts/gpu_check.sh > gpu_check.json          # on the GPU
#   bash scripts/gpu_check.sh --wired                    # anywhere: checks only that it is wired (CI)
# Other options: --data DIR (CamVid with val/), --weights NAME, --only SECTION[,SECTION], --budget-s S.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python3}"
[[ -x "$here/../.venv/bin/python" && -z "${PYTHON:-}" ]] && python="$here/../.venv/bin/python"
# A hard stop 20 s after the script's own 470 s budget: never past 8 minutes, whatever hangs.
exec timeout --kill-after=10 490 "$python" "$here/../training/gpu_check.py" "$@"
