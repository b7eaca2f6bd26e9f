# Shared set-up for scripts/*: create or refresh .venv and install the project.
# Sourced, not executed. Re-installs only when pyproject.toml changed (a stamp holds its hash).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv"
EXTRAS="${1:-all,dev}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "asgi-perf: creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.asgi-perf-installed-${EXTRAS//,/-}"
want="$(sha256sum pyproject.toml | cut -d' ' -f1) $EXTRAS"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "asgi-perf: installing .[$EXTRAS] into $VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e ".[$EXTRAS]"
  echo "$want" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"
