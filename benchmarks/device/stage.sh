#!/usr/bin/env bash
# Stash one carried part (.stage/PART/*) in /root/stage, which lives while the device machine is warm.
set -euo pipefail
mkdir -p /root/stage
cp ".stage/$1/"* /root/stage/
ls -la /root/stage | tail -n +2 | awk '{print $5, $9}'
