#!/usr/bin/env bash
# Download the pure-Python wheels unlearn_trainer needs beyond torch, transformers, peft and accelerate into
# wheels/ (git-ignored) at the repository root, for benchmarks/gpu/run.sh on a machine without network.
# Run this on a machine WITH the package registries:   benchmarks/gpu/fetch_wheels.sh
# then copy the repository (wheels/ included) to the GPU machine. Use the same Python minor version as that machine
# (multiprocess publishes one wheel per Python version).
#
# Not fetched: the compiled dependencies of `datasets` (pyarrow, xxhash, pandas) and bitsandbytes (an extra).
# real_size.py imports none of trl, datasets, evaluate, rouge-score or sacrebleu (checked: it runs with those
# imports blocked); they are installed so the rest of the package (cli, evaluation) works there too.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PY=${PYTHON:-python}
WHEELS="$ROOT/wheels"
mkdir -p "$WHEELS"
# Pinned to the versions the test suite runs with (setup.cfg's lower bounds allow newer ones); pure Python only.
# nltk needs regex, click and joblib at import; regex is compiled and not fetched (rouge-score's stemmer only).
PACKAGES=(
  trl==1.16.0 evaluate==0.4.6 rouge-score==0.1.2 absl-py==2.5.1 nltk==3.10.4 click==8.5.1 joblib==1.6.0 six==1.17.0
  sacrebleu==2.6.0 portalocker==4.4.2 tabulate==0.10.0 colorama==0.4.6
  datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 fsspec==2026.9.0
)
"$PY" -m pip download --no-deps --dest "$WHEELS" "${PACKAGES[@]}"
# Some (rouge-score) publish only a source archive: build a wheel from it so the GPU machine needs no build step.
shopt -s nullglob
for sdist in "$WHEELS"/*.tar.gz "$WHEELS"/*.zip; do
  "$PY" -m pip wheel --no-deps --wheel-dir "$WHEELS" "$sdist" && rm -f "$sdist"
done
ls -1 "$WHEELS"
