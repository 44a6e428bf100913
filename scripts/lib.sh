# Shared by the scripts: find a Python >= 3.12 and keep the project's virtual environment current.
# Sourced, not run.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${IOTHUB_VENV:-$ROOT/.venv}"

say() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; }

# Prints the path of the first Python >= 3.12 found: $PYTHON, python3.13, python3.12, pyenv's, python3.
find_python() {
  local candidates=()
  [ -n "${PYTHON:-}" ] && candidates+=("$PYTHON")
  candidates+=(python3.13 python3.12)
  if command -v pyenv >/dev/null 2>&1; then
    local root
    root="$(pyenv root)"
    for v in $(ls -1 "$root/versions" 2>/dev/null | grep -E '^3\.(1[2-9]|[2-9][0-9])(\.[0-9]+)?$' | sort -V -r); do
      candidates+=("$root/versions/$v/bin/python3")
    done
  fi
  candidates+=(python3)
  local c
  for c in "${candidates[@]}"; do
    if command -v "$c" >/dev/null 2>&1 &&
      "$c" -c 'import sys, venv; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; then
      command -v "$c"
      return 0
    fi
  done
  return 1
}

# Creates the virtual environment if missing and installs the given requirements file when it
# changed since the last install.
ensure_venv() {
  local requirements="$1"
  if [ ! -x "$VENV/bin/python" ]; then
    local python
    python="$(find_python)" || {
      say "no Python >= 3.12 found (Django 6 needs it); install one or set PYTHON=/path/to/python3.12"
      exit 1
    }
    say "creating the virtual environment with $("$python" --version)"
    "$python" -m venv "$VENV"
  fi
  local stamp="$VENV/.installed-$(basename "$requirements")"
  local digest
  digest="$(cat "$ROOT/requirements.txt" "$requirements" | sha256sum | cut -d' ' -f1)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$digest" ]; then
    say "installing $(basename "$requirements")"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -r "$requirements"
    echo "$digest" >"$stamp"
  fi
}
