# Two set-up commands for a fresh machine: `make demo` and `make test`.
# Both bootstrap .venv from pyproject.toml; nothing else has to be installed by hand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -n 2 --dist loadfile

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache build src/*.egg-info

# requirements.lock: what the guard's image installs (Dockerfile), every package pinned with
# its sha256 hashes, for CPython 3.11 on linux/x86_64 (the image's python:3.11 slim base), at
# the versions this .venv tests; plus the build backend that installs the package itself.
# Run after changing dependencies in pyproject.toml. uv lives in its own venv under build/,
# never in .venv.
LOCK_VENV := build/lock
.PHONY: lock
lock: $(STAMP)
	test -x $(LOCK_VENV)/bin/uv || $(PYTHON) -m venv $(LOCK_VENV)
	test -x $(LOCK_VENV)/bin/uv || $(LOCK_VENV)/bin/python -m pip install --quiet 'uv>=0.5,<1'
	$(BIN)/python -m pip freeze --exclude-editable > $(LOCK_VENV)/tested.txt
	$(BIN)/python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['build-system']['requires'], sep='\n')" > $(LOCK_VENV)/build-system.in
	$(LOCK_VENV)/bin/uv pip compile pyproject.toml $(LOCK_VENV)/build-system.in \
	    --generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_36 \
	    --constraint $(LOCK_VENV)/tested.txt --custom-compile-command "make lock" \
	    --output-file requirements.lock
