# Shared by scripts/*: installs the pinned uv once (outside the checkout) and sets $UV. Sourced.
# The lock pins every development tool, so the gates give the same answer on any day; refresh it
# on purpose with ./scripts/lock. PYTHON picks the interpreter (default: python3).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# Keep in step with [tool.uv] required-version in pyproject.toml.
UV_VERSION="0.13.9"
PYTHON="${PYTHON:-python3}"
# Interpreters come from this machine only (pyenv, the system); never downloaded.
export UV_PYTHON_DOWNLOADS=never
UV_HOME="${ASGI_PERF_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/asgi-perf}/uv-$UV_VERSION"
if [ ! -x "$UV_HOME/bin/uv" ]; then
  echo "asgi-perf: installing uv $UV_VERSION into $UV_HOME (first run only)"
  "$PYTHON" -m venv "$UV_HOME"
  "$UV_HOME/bin/python" -m pip install --quiet "uv==$UV_VERSION"
fi
UV="$UV_HOME/bin/uv"
