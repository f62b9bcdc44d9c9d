#!/usr/bin/env bash
# The main job: a voice session on the embedded CPU defaults. Arguments go to `rtchat run`
# (e.g. --duration 10, --config gpu, agent.interval_s=0.5). Ctrl-C stops it.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup-env.sh"
cd "$ROOT"
exec "$VENV/bin/rtchat" run "$@"
