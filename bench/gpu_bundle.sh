#!/usr/bin/env bash
# What the lent GPU machine needs beside its own packages to run bench/gpu_check.py, and the device calls that
# bring it there (`make gpu-bundle`). That machine has Python 3.12, torch 2.11+cu130, numpy, pandas, pyarrow,
# onnx, pyyaml and typer, no package index, and takes at most 64 MiB per call, the working tree included:
#
#   .whl/            pydantic and the packages it needs, cp312 wheels at the versions of this venv (~2.5 MiB),
#                    plus the name and sha256 of the onnxruntime-gpu wheel: carried with the last call
#   .ortgpu-parts/   the onnxruntime-gpu wheel (~245 MiB) cut into parts that each fit beside the working tree
#
# The same scheme as ../shared/device/ort-gpu.sh (which stages one part at a time into .ortgpu/ between
# calls); here each call carries its part straight from .ortgpu-parts/, so nothing runs here between the
# calls, and it works in a git worktree too. bench/gpu_run.sh puts the parts together on the GPU machine.
#
#   bench/gpu_bundle.sh          build what is missing, check the sizes, print the calls
#   bench/gpu_bundle.sh plan     check the sizes again and print the calls
set -euo pipefail

ORT_VERSION=${ORT_GPU_VERSION:-1.31.1}
LIMIT_MIB=${UPLOAD_LIMIT_MIB:-64}
MARGIN_MIB=${MARGIN_MIB:-1}          # room for files the tree gains before the calls are made
MIB=1048576
root=$(git rev-parse --show-toplevel)
cd "$root"
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
whl=.whl
parts=.ortgpu-parts
WHEEL=onnxruntime_gpu-${ORT_VERSION}-cp312-cp312-manylinux_2_28_x86_64.whl
PLATFORM=(--only-binary=:all: --no-deps --python-version 3.12 --implementation cp
          --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)

for d in "$whl" "$parts"; do
  git check-ignore -q "$d/x" || { echo "$d/ must be git-ignored (.gitignore)"; exit 1; }
done

sizeof() { # total bytes of the files named on stdin (NUL-separated)
  xargs -0 -r stat -c %s -- 2>/dev/null | awk '{s += $1} END {print s + 0}'
}

build() {
  mkdir -p "$whl" "$parts"
  # pydantic at this venv's versions, so the GPU run validates params exactly as here
  local want=() name v
  for name in pydantic pydantic-core typing-inspection annotated-types typing-extensions; do
    v=$("$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name" 2>/dev/null) ||
      { echo "$PY has no $name: set up .venv first (make install)"; exit 1; }
    want+=("$name==$v")
  done
  local have; have=$(find "$whl" -type f -name "*.whl" | wc -l)
  if [ "$have" -ne "${#want[@]}" ]; then
    rm -f "$whl"/*.whl
    "$PY" -m pip download -q "${PLATFORM[@]}" -d "$whl" "${want[@]}" 2>&1 | grep -v "is ignored" || true
  fi
  if [ ! -f "$parts/$WHEEL" ]; then
    "$PY" -m pip download -q "${PLATFORM[@]}" -d "$parts" "onnxruntime-gpu==$ORT_VERSION" 2>&1 | grep -v "is ignored" || true
  fi
  [ -f "$parts/$WHEEL" ] || { echo "could not download $WHEEL"; exit 1; }
  echo "$WHEEL" > "$whl/ort-wheel.name"
  sha256sum "$parts/$WHEEL" | cut -d' ' -f1 > "$whl/ort-wheel.sha256"
}

split_parts() {
  local tree wheels wheel room
  tree=$(git ls-files -z --cached --others --exclude-standard | sizeof)
  wheels=$(find "$whl" -type f -print0 | sizeof)
  wheel=$(stat -c %s "$parts/$WHEEL")
  room=$(( (LIMIT_MIB - MARGIN_MIB) * MIB - tree ))          # one call: the tree + one part
  [ "$room" -gt $(( 8 * MIB )) ] || { echo "the working tree ($tree bytes) leaves no room for parts"; exit 1; }
  # n calls carry n parts; the last call also carries .whl, so its part is kept to room - wheels
  local n size last_max
  n=$(( (wheel + wheels + room - 1) / room ))
  size=$(( (wheel + n - 1) / n ))
  last_max=$(( room - wheels ))
  if [ "$size" -gt "$last_max" ] && [ "$n" -gt 1 ]; then
    size=$(( (wheel - last_max + n - 2) / (n - 1) ))     # n-1 larger parts, then a remainder <= last_max
  fi
  rm -f "$parts"/ort.part.*
  (cd "$parts" && split -b "$size" -d "$WHEEL" ort.part.)
}

plan() {
  local tree wheels room list n last k p total
  tree=$(git ls-files -z --cached --others --exclude-standard | sizeof)
  wheels=$(find "$whl" -type f -print0 | sizeof)
  room=$(( (LIMIT_MIB - MARGIN_MIB) * MIB - tree ))
  mapfile -t list < <(cd "$parts" && ls ort.part.* 2>/dev/null)
  n=${#list[@]}
  [ "$n" -gt 0 ] || { echo "no parts: run bench/gpu_bundle.sh first"; exit 1; }
  last=$((n - 1))
  echo "working tree $(( tree / 1024 )) KiB; .whl $(( wheels / 1024 )) KiB; $n parts of onnxruntime-gpu $ORT_VERSION:"
  for k in $(seq 0 $last); do
    p=${list[$k]}
    total=$(( tree + $(stat -c %s "$parts/$p") + (k == last ? wheels : 0) ))
    awk -v k=$((k + 1)) -v p="$parts/$p" -v t="$total" -v lim=$(( LIMIT_MIB * MIB )) 'BEGIN {
      printf "  call %d carries %-24s %5.1f MiB with the tree%s\n", k, p, t / 1048576,
             (t > lim ? "  OVER THE LIMIT: run bench/gpu_bundle.sh again" : "") }'
  done
  cat <<PLAN

When a GPU session comes (15 minutes of device time, one chip): make the calls below back to back (the machine
is given back 30 s after a call: a gap loses the parts), then give_back. Device tool, 'run':
PLAN
  for k in $(seq 0 $((last - 1))); do
    echo "  $((k + 1)). carry [\"$parts/${list[$k]}\"]  timeout_s 120"
    echo "     command: mkdir -p /tmp/ortp && cp $parts/ort.part.* /tmp/ortp/ && ls -l /tmp/ortp"
  done
  echo "  $n. carry [\"$parts/${list[$last]}\", \"$whl\"]  timeout_s 540"
  echo "     command: bash bench/gpu_run.sh"
  cat <<PLAN
     (puts the wheel together and checks its sha256, installs it and .whl into /tmp/site, runs nvidia-smi,
     \`cellcast doctor --device cuda\` and bench/gpu_check.py under a 450 s timeout: \$OUT gets gpu_check.jsonl,
     gpu_check.md, gpu_check.log, doctor.txt, env.txt)
  Rerun at once if needed (the machine still warm, /tmp/site installed): carry ["$whl"], command
     bash bench/gpu_run.sh --sections infer serve    (or the sections that failed), timeout_s 420
  Then give_back, and put gpu_check.md's tables in BENCHMARKS.md (GPU) with the machine and the date.
PLAN
}

case "${1:-build}" in
  build)
    build
    split_parts
    plan
    ;;
  plan) plan ;;
  *) echo "usage: $0 [build|plan]"; exit 2 ;;
esac
