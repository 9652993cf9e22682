# Source on the device machine: `source benchmarks/device/env.sh models|sim`.
#   models: unpack ray + diffusers (+ small deps) into /root/site and make robofleet importable;
#   sim:    also join the stashed parts, unpack robosuite/libero/mujoco and the LIBERO assets,
#           install the GL loader packages and point EGL at NVIDIA's driver.
set -e
mkdir -p /root/site/robofleet
if [ ! -d /root/site/ray ]; then
  tar xJf .devpack/site.tar.xz -C /root/site
  tar xJf .extra/site.tar.xz -C /root/site
fi
for d in platform envs policies planners jobs; do ln -sfn "$PWD/$d" "/root/site/robofleet/$d"; done
if [ "${1:-models}" = sim ] && [ ! -d /root/site/libero/libero/assets/scenes ]; then
  (cd /root/stage && cat sim.a? > sim.tar.xz && cat ast.a? > ast.tar.xz)
  tar xJf /root/stage/sim.tar.xz -C /root/site
  mkdir -p /root/site/libero/libero/assets
  tar xJf /root/stage/ast.tar.xz -C /root/site/libero/libero/assets --strip-components=1
fi
if [ "${1:-models}" = sim ]; then
  for f in .gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
  export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
  export MUJOCO_GL=egl LIBERO_CONFIG_PATH=/root/lcfg
fi
export PYTHONPATH=/root/site PYTHONUNBUFFERED=1
set +e
