#!/usr/bin/env bash
# Multi-worker genscale training on machines you start by hand: run this script on every host with that host's
# index in HOSTS (0 is the chief, which writes checkpoints, events and samples).
#
#   HOSTS=10.0.0.2,10.0.0.3 INDEX=0 launch/templates/hosts.sh     # on 10.0.0.2
#   HOSTS=10.0.0.2,10.0.0.3 INDEX=1 launch/templates/hosts.sh     # on 10.0.0.3
#
# Every host needs genscale installed, the same config, port 2222 open between the hosts (or give host:port in
# HOSTS), and the workdir on storage they all reach (gs:// or a shared file system). Start all hosts within a few
# minutes of each other: the workers wait for each other before the first step. To resume, run the same commands
# again. Extra arguments go to launch.train, e.g. --config.steps=200000.
set -euo pipefail
: "${HOSTS:?set HOSTS to the comma-separated worker hosts, the chief first}"
: "${INDEX:?set INDEX to the position of this host in HOSTS, 0 for the chief}"
CONFIG="${CONFIG:-launch/configs/dcgan.py:gpu}"
WORKDIR="${WORKDIR:?set WORKDIR, e.g. gs://BUCKET/runs/dcgan-hosts}"
exec python -m launch.cluster exec --hosts="$HOSTS" --index="$INDEX" -- \
  python -m launch.train --config="$CONFIG" --workdir="$WORKDIR" --config.runtime.strategy=multiworker "$@"
