#!/usr/bin/env bash
# The whole test suite. Arguments go to pytest (e.g. -k wire, -x).
set -euo pipefail
RTCHAT_TEST_TOOLS=1 source "$(dirname "${BASH_SOURCE[0]}")/setup-env.sh"
cd "$ROOT"
exec "$VENV/bin/python" -m pytest "$@"
