# Source on the device machine after the four staging calls (benchmarks/device/README.md, "asset
# trees"): joins the stashed parts, unpacks robosuite 1.4 / libero / mujoco 3.3.2, and two LIBERO
# asset trees holding the files the benchmarked tasks load: the originals at /root/orig and the
# stand-ins at /root/standin. Every other manifest path gets an empty placeholder (those tasks never
# open them; LIBERO's start-up check only stats them), so both trees report as modified: say which
# subset a figure used.
set -e
source benchmarks/device/env.sh models
if [ ! -d /root/site/libero ]; then
  (cd /root/stage && cat sim.a?? > sim.tar.xz && cat ori.a?? > orig.tar.xz)
  tar xJf /root/stage/sim.tar.xz -C /root/site
  mkdir -p /root/orig /root/standin
  tar xJf /root/stage/orig.tar.xz -C /root/orig
  tar xJf /root/stage/sta.tar.xz -C /root/standin
  for tree in /root/orig /root/standin; do
    grep -v '^#' envs/libero_assets_manifest.tsv | tail -n +2 | cut -f1 | while read -r rel; do
      [ -e "$tree/$rel" ] || { mkdir -p "$(dirname "$tree/$rel")"; : > "$tree/$rel"; }
    done
  done
  ln -sfn /root/orig /root/site/libero/libero/assets
fi
# Stage p5 (optional, carried after p4): every XML file of both trees. Without it the XMLs a task does not
# list stay empty placeholders, and a robofleet run's scene build fails parsing one (its arena, say).
for tree in orig sta; do
  [ -f "/root/stage/xml_$tree.tar.xz" ] && tar xJf "/root/stage/xml_$tree.tar.xz" -C "/root/${tree/sta/standin}"
done
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
export MUJOCO_GL=egl LIBERO_CONFIG_PATH=/root/lcfg PYTHONPATH=/root/site PYTHONUNBUFFERED=1
set +e
