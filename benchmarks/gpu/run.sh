#!/usr/bin/env bash
# One-command real-size benchmark on a GPU machine with NO network (torch, transformers, peft, accelerate present).
#
#   benchmarks/gpu/run.sh OUT_DIR [--cpu] [real_size.py options...]
#
# 1. installs the wheels in wheels/ (from benchmarks/gpu/fetch_wheels.sh) offline: pip --no-index --no-deps;
# 2. installs the package offline (pip --no-deps --no-build-isolation -e .) unless it is importable already; the
#    repository is put first on PYTHONPATH in any case, so this checkout's code is what runs;
# 3. runs benchmarks/real_size.py --device cuda --out OUT_DIR (JSON + Markdown there, plus run.log).
# --cpu: skip the CUDA requirement and run real_size.py's CPU mode (to test this script without a GPU).
# The CUDA run is sized for < 8 minutes on one H200-class GPU (real_size.py --max_minutes 6 by default here).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
if [[ $# -lt 1 || "$1" == -* ]]; then
  echo "usage: $0 OUT_DIR [--cpu] [real_size.py options...]" >&2
  exit 2
fi
OUT=$(mkdir -p "$1" && cd "$1" && pwd)
shift
DEVICE=cuda
if [[ "${1:-}" == "--cpu" ]]; then
  DEVICE=cpu
  shift
fi
PY=${PYTHON:-python}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1

shopt -s nullglob
wheels=("$ROOT"/wheels/*.whl)
if (( ${#wheels[@]} )); then
  echo "== installing ${#wheels[@]} wheel(s) from wheels/ (offline)"
  "$PY" -m pip install --no-index --find-links "$ROOT/wheels" --no-deps "${wheels[@]}" | tail -n 2
else
  echo "== no wheels/ folder: skipping (run benchmarks/gpu/fetch_wheels.sh on a machine with the registries)"
fi

if (cd / && "$PY" -c "import unlearn_trainer" 2>/dev/null); then
  echo "== unlearn_trainer already importable: not reinstalled"
else
  echo "== installing the package (offline, editable)"
  "$PY" -m pip install --no-index --no-deps --no-build-isolation -e "$ROOT" | tail -n 1 \
    || echo "   (install failed: running from the source tree through PYTHONPATH)"
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

"$PY" - "$DEVICE" <<'PYEOF'
import sys

import accelerate, peft, torch, transformers  # noqa: E401,F401 - the four the machine must already have

device = sys.argv[1]
print(f"== torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, "
      f"accelerate {accelerate.__version__}, CUDA {torch.cuda.is_available()}")
if device == "cuda" and not torch.cuda.is_available():
    sys.exit("no CUDA device (use --cpu to test this script in CPU mode)")
PYEOF

extra=()
if [[ "$DEVICE" == cuda ]] && ! printf '%s\n' "$@" | grep -q -- '--max[_-]minutes'; then
  extra=(--max_minutes 6)
fi
echo "== python benchmarks/real_size.py --device $DEVICE --out $OUT ${extra[*]-} $*"
"$PY" "$ROOT/benchmarks/real_size.py" --device "$DEVICE" --out "$OUT" "${extra[@]}" "$@" 2>&1 | tee "$OUT/run.log"
echo "== results in $OUT"
