#!/usr/bin/env bash
# Runs ON the lent GPU machine, as the last device call of `make gpu-bundle`'s plan (from the repository
# root there): puts the onnxruntime-gpu wheel together from the parts carried by the earlier calls, installs
# it and the carried wheels (.whl: pydantic...) into /tmp/site, then nvidia-smi, `cellcast doctor --device
# cuda` and bench/gpu_check.py (arguments are passed on), all of it into $OUT. Without a complete wheel the
# check still runs: training and torch figures come back, the ONNX Runtime ones say why they are missing.
set -uo pipefail
OUT=${OUT:?the device tool sets OUT}
CHECK_TIMEOUT=${CHECK_TIMEOUT:-450}
SITE=${GPU_SITE:-/tmp/site}         # where the carried wheels are installed
PARTS=${GPU_PARTS:-/tmp/ortp}        # where the earlier calls left their parts
export PYTHONUNBUFFERED=1

{
  date -u +"%F %T UTC"; uname -a; python3 --version
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 || true
} > "$OUT/env.txt" 2>&1

if [ ! -d "$SITE/onnxruntime" ] || [ ! -d "$SITE/pydantic" ]; then
  mkdir -p "$PARTS" "$SITE"
  cp .ortgpu-parts/ort.part.* "$PARTS"/ 2>/dev/null || true
  wheels=(.whl/*.whl)
  name=$(cat .whl/ort-wheel.name 2>/dev/null || echo onnxruntime_gpu.whl)
  cat "$PARTS"/ort.part.* > "/tmp/$name" 2>/dev/null || true
  if echo "$(cat .whl/ort-wheel.sha256 2>/dev/null)  /tmp/$name" | sha256sum -c --status; then
    wheels+=("/tmp/$name")
  else
    echo "onnxruntime-gpu: the parts in $PARTS ($(ls "$PARTS" | tr '\n' ' ')) do not make the wheel:" \
         "a call was missed or the machine was given back between calls; going on without it" | tee -a "$OUT/env.txt"
  fi
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
    "${wheels[@]}" >> "$OUT/env.txt" 2>&1 || echo "pip install failed (see env.txt)"
fi
export PYTHONPATH=$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}
python3 -c 'import onnxruntime as o, pydantic; print("onnxruntime", o.__version__, o.get_available_providers(), "pydantic", pydantic.VERSION)' \
  >> "$OUT/env.txt" 2>&1
python3 -m cellcast doctor --device cuda > "$OUT/doctor.txt" 2>&1
echo "doctor exit $?" | tee -a "$OUT/doctor.txt"
timeout "$CHECK_TIMEOUT" python3 bench/gpu_check.py --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_check.log"
rc=${PIPESTATUS[0]}
echo "gpu_check exit $rc$( [ "$rc" = 124 ] && echo ": stopped at ${CHECK_TIMEOUT} s; what it measured is in gpu_check.jsonl")"
cat "$OUT/gpu_check.md" 2>/dev/null
exit "$rc"
