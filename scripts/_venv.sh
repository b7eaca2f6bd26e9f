# Shared set-up for scripts/*: make .venv match uv.lock exactly (creating it if needed).
# Sourced, not executed:  source scripts/_venv.sh [uv sync options, e.g. --extra all --group bench]
source "$(dirname "${BASH_SOURCE[0]}")/_uv.sh"
export UV_PROJECT_ENVIRONMENT="$ROOT/.venv"
"$UV" sync --locked --python "$PYTHON" "$@"
export VIRTUAL_ENV="$ROOT/.venv"
export PATH="$VIRTUAL_ENV/bin:$PATH"
