PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The locks (hashes, from pyproject.toml by `make lock`): runtime (the image installs it) and runtime + test
# (the venv and CI install it; the runtime lock is compiled inside it, so both pin the same versions).
LOCK := requirements.lock
TEST_LOCK := requirements-test.lock
TOOLS := .tools
UV_VERSION := 0.13.8
# The image's platform: Linux x86_64 (manylinux 2.28, as the official Ray images), CPython 3.11.
UV_COMPILE := $(TOOLS)/bin/uv pip compile pyproject.toml --generate-hashes --python-version 3.11 \
	--python-platform x86_64-manylinux_2_28 --custom-compile-command "make lock" --quiet $(UV_ARGS)
LOCK_PY := $(firstword $(shell command -v $(PY) python3))

.PHONY: venv lock demo test unit integration bench lint image image-check clean

$(STAMP): pyproject.toml $(wildcard $(LOCK) $(TEST_LOCK))
	$(eval LOCK_PROBLEM := $(shell $(LOCK_PY) .ci/lock.py check $(LOCK) $(TEST_LOCK)))
	$(if $(LOCK_PROBLEM),$(error $(LOCK_PROBLEM)))
	@test -x $(BIN)/python || $(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --require-hashes -r $(TEST_LOCK)
	$(BIN)/python -m pip install -q --no-deps -e .
	@touch $(STAMP)

# Re-resolve the locks after a change to pyproject's dependencies (pins already in a lock are kept where
# they still fit; `make lock UV_ARGS=--upgrade` moves everything to the newest allowed release).
lock:
	@test -x $(TOOLS)/bin/uv || { $(PY) -m venv $(TOOLS) && $(TOOLS)/bin/python -m pip install -q uv==$(UV_VERSION); }
	$(UV_COMPILE) --extra test -o $(TEST_LOCK)
	$(UV_COMPILE) -c $(TEST_LOCK) -o $(LOCK)
	$(LOCK_PY) .ci/lock.py stamp $(LOCK) $(TEST_LOCK)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/thoraxmae demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -ra --durations=25 tests

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

integration: $(STAMP)
	$(BIN)/python -m pytest -q tests/integration

bench: $(STAMP)
	$(BIN)/python benchmarks/loader.py
	$(BIN)/python benchmarks/step.py

lint: $(STAMP)
	$(BIN)/ruff check thoraxmae study trainers datasets analysis tests benchmarks

# The container image (deploy/image/README.md): `make image` builds the GPU variant from the official Ray
# image; `make image-check` builds and runs a stand-in on a local Debian base (not part of `make test`).
VARIANT ?= gpu
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE ?= ghcr.io/your-org/thoraxmae:$(VERSION)$(if $(filter cpu,$(VARIANT)),-cpu)
CONTAINER ?= docker
image:
	$(CONTAINER) build -f deploy/image/Dockerfile --build-arg VARIANT=$(VARIANT) -t $(IMAGE) .

image-check:
	deploy/image/check.sh

clean:
	rm -rf $(VENV) .pytest_cache
