#!/usr/bin/env bash
# Create a throwaway venv with Python Mitogen 0.3.54 for the comparison benchmarks.
# Idempotent: reuses bench/.venv if present, pip is a no-op when already satisfied.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/../.venv"

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check 'mitogen==0.3.54'
"$venv/bin/python" -c 'import mitogen; assert mitogen.__version__ == (0, 3, 54), mitogen.__version__'
