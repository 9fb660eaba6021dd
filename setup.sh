#!/usr/bin/env bash
# ./setup.sh COMMAND [ARGS...]: set up this checkout's virtualenv if it is
# missing or out of date, then run COMMAND inside it. The README's two
# commands are this script in front of the main job and of the tests:
#
#   ./setup.sh mrt-distill distill --config configs/reference_cpu.py --workdir runs/reference_cpu
#   ./setup.sh python -m pytest -q
#
# Needs: bash and Python >= 3.10 with its venv module (3.11 is what CI and
# constraints.txt use; on Debian/Ubuntu `apt-get install python3.11
# python3.11-venv`), and network access to PyPI on the first run. No make,
# no compiler: every dependency comes as a wheel.
#
# The set-up (once, then only when setup.py, pyproject.toml, constraints.txt
# or the extras change): a venv at .venv (MRT_VENV overrides), then
#   pip install -c constraints.txt -e ".[test]"      (MRT_EXTRAS overrides "test")
#   pip install -c constraints.txt --no-deps tinysoundfont
# The second line is the General MIDI synthesiser of the reference world
# without its declared `pyaudio` dependency: only live playback through
# PortAudio needs pyaudio, and it has no Linux wheel (building it needs the
# PortAudio headers). Versions are pinned by constraints.txt for both lines.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${MRT_VENV:-$HERE/.venv}"
EXTRAS="${MRT_EXTRAS:-test}"

die() { echo "setup.sh: error: $*" >&2; exit 1; }

find_python() {
  local c
  for c in ${PYTHON:-} python3.11 python3 python; do
    if command -v "$c" >/dev/null 2>&1 && "$c" -c \
        'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
      echo "$c"
      return
    fi
  done
  die "no Python >= 3.10 found (3.11 recommended): install it, e.g. " \
      "'apt-get install python3.11 python3.11-venv', or set PYTHON=/path/to/python3.11"
}

stamp_of() {  # what the installed venv must match
  "$1" - "$HERE" "$EXTRAS" <<'EOF'
import hashlib, pathlib, sys
root, extras = pathlib.Path(sys.argv[1]), sys.argv[2]
h = hashlib.sha256(f"{sys.version}|{extras}|{root}".encode())
for name in ("setup.py", "pyproject.toml", "constraints.txt"):
  h.update(name.encode() + b"\0" + (root / name).read_bytes())
print(h.hexdigest())
EOF
}

if [ ! -x "$VENV/bin/python" ]; then
  PY="$(find_python)"
  echo "setup.sh: creating $VENV with $("$PY" --version 2>&1)" >&2
  "$PY" -m venv "$VENV" || die "could not create a virtualenv at $VENV; " \
      "on Debian/Ubuntu install the venv module: apt-get install python3.11-venv"
fi
STAMP_FILE="$VENV/.mrt-distill-installed"
WANT="$(stamp_of "$VENV/bin/python")"
if [ "$(cat "$STAMP_FILE" 2>/dev/null || true)" != "$WANT" ]; then
  echo "setup.sh: installing mrt_distill[$EXTRAS] into $VENV (the first" \
       "time takes a few minutes) ..." >&2
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
      -c "$HERE/constraints.txt" -e "$HERE[$EXTRAS]"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
      -c "$HERE/constraints.txt" --no-deps tinysoundfont
  echo "$WANT" > "$STAMP_FILE.tmp" && mv "$STAMP_FILE.tmp" "$STAMP_FILE"
  echo "setup.sh: installed." >&2
fi

export VIRTUAL_ENV="$VENV"
export PATH="$VENV/bin:$PATH"
if [ $# -eq 0 ]; then
  echo "setup.sh: $VENV is ready; run a command in it, e.g." \
       "./setup.sh python -m pytest -q" >&2
  exit 0
fi
exec "$@"
