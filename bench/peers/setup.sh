#!/usr/bin/env bash
# The peers' own virtualenv (bench/peers/.venv, git-ignored): Darts, NeuralForecast and statsforecast for
# bench/peers/run.py. Never a dependency of cellcast: statsforecast 2.1.1 pins pandas < 3 (cellcast runs on 3.1).
#
#   bash bench/peers/setup.sh            # create (or complete) the venv; about 1 min here
#   bash bench/peers/setup.sh --lock     # install exactly requirements.lock (every package, as resolved 2026-11-28)
#
# torch==2.13.0 first: on these machines that version is a CPU build on local disk; a bare `torch` (or a newer
# range) would download a multi-GB CUDA build. darts 0.48.1, neuralforecast 3.3.0 (pytorch-lightning 2.6.6)
# and statsforecast 2.1.1 all accept it. Elsewhere, the CPU wheel of the same version comes from
# `--index-url https://download.pytorch.org/whl/cpu`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv"
py="${PYTHON:-python3.11}"
command -v "$py" >/dev/null || py=python3
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
pip=("$venv/bin/pip" install --disable-pip-version-check -q)
"${pip[@]}" torch==2.13.0
if [ "${1:-}" = "--lock" ]; then
  "${pip[@]}" -r "$here/requirements.lock"
else
  "${pip[@]}" torch==2.13.0 darts==0.48.1 neuralforecast==3.3.0 statsforecast==2.1.1 \
    pytorch-lightning==2.6.6 pandas==2.3.3 numpy==2.4.6 pyarrow==26.0.1
fi
"$venv/bin/pip" check
"$venv/bin/python" -c "import darts, neuralforecast, statsforecast, torch; print('peers venv:', 'darts', darts.__version__, \
'neuralforecast', neuralforecast.__version__, 'statsforecast', statsforecast.__version__, 'torch', torch.__version__)"
