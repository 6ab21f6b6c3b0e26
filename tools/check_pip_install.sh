#!/usr/bin/env bash
# The package as a user installs it: `pip install .` (no lock, the metadata's ranges) into a
# fresh venv, then the smoke config trains from another folder, so the installed copy runs.
#   tools/check_pip_install.sh [PYTHON]   (default: the venv's interpreter, .venv/bin/python)
# Needs the Fashion-MNIST IDX files where the package finds them (make data).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${1:-$ROOT/.venv/bin/python}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
"$PYTHON" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q --upgrade pip
"$WORK/venv/bin/python" -m pip install -q "$ROOT"
echo "pip install . pulled $("$WORK/venv/bin/python" -m pip list --format=freeze | wc -l) distributions," \
     "$(du -sm "$WORK/venv" | cut -f1) MB:"
"$WORK/venv/bin/python" -m pip list --format=freeze | grep -iE '^(jax|jaxlib|flax|optax|orbax-checkpoint|tensorflow-cpu|tensorflow-datasets|numpy|scipy)==' | tr '\n' ' '
echo
cd "$WORK"
"$WORK/venv/bin/python" -c "import sagan_jax, os; assert not os.path.dirname(sagan_jax.__file__).startswith('$ROOT'), sagan_jax.__file__"
# the package data came along: the report page's files and the metric's classifier
"$WORK/venv/bin/python" -c "
from sagan_jax.evaluation import fmnist_classifier
import sagan_jax.report, pathlib
assert list(fmnist_classifier.SHIPPED.glob('*.npz')), fmnist_classifier.SHIPPED
assert (pathlib.Path(sagan_jax.report.__file__).parent / 'page.js').exists()"
"$WORK/venv/bin/python" -m sagan_jax.main --config="$ROOT/configs/fashion_mnist.py:smoke" --workdir="$WORK/run"
test -f "$WORK/run/samples/step_00000004.png"
echo "check_pip_install: the installed package trained the smoke config"
