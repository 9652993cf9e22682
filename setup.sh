#!/usr/bin/env bash
# Set up robofleet on a fresh machine: headless-EGL system packages, a virtual environment at .venv
# with pinned simulators and CPU torch, LIBERO's assets and config (so nothing prompts).
#
#   bash setup.sh [--assets PATH/TO/libero/assets]
#
# The LIBERO asset tree defaults to ../shared/assets/libero (or $ROBOFLEET_LIBERO_ASSETS).
# Re-running is cheap: installed pieces are kept.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

ASSETS="${ROBOFLEET_LIBERO_ASSETS:-../shared/assets/libero}"
while [ $# -gt 0 ]; do
  case "$1" in
    --assets) ASSETS="$2"; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown argument $1 (allowed: --assets PATH)" >&2; exit 2 ;;
  esac
done

# 1. System packages for headless MuJoCo rendering (EGL via Mesa on CPU machines).
EGL_PKGS="libegl1 libegl-mesa0 libgl1-mesa-dri libglib2.0-0"
missing=$(for p in $EGL_PKGS; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
if [ -n "$missing" ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "[setup] apt-get install $missing"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

# 2. The virtual environment. CPU torch first, pinned: anything else may pull GBs of CUDA wheels.
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip 2>/dev/null || true
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[test]"
# PyPI's torchvision is a CUDA build that breaks `import diffusers` next to CPU torch; nothing needs it.
.venv/bin/python -m pip uninstall -y -q torchvision 2>/dev/null || true

# 3. LIBERO: its assets (not in the PyPI package) and its config file (else it prompts on import).
.venv/bin/robofleet setup-libero --assets "$ASSETS"
echo "[setup] done: $(.venv/bin/python -c 'import mujoco, robosuite, ray, torch; print(f"mujoco {mujoco.__version__}, robosuite {robosuite.__version__}, ray {ray.__version__}, torch {torch.__version__}")' 2>/dev/null)"
