# The two commands a newcomer needs: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MODEL ?= smollm2

.PHONY: run test install models browser lint bench clean

$(STAMP): pyproject.toml setup.py src/corral/kernels/qkernels.c src/corral/kernels/attention.c src/corral/kernels/rowops.c src/corral/kernels/half.h src/corral/gguf/strings.c
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch pinned first: an unpinned torch pulls a multi-GB CUDA build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

models: $(STAMP)
	$(BIN)/corral pull smollm2
	$(BIN)/corral pull gemma3-270m
	$(BIN)/corral pull minilm

run: $(STAMP)
	$(BIN)/corral pull $(MODEL)
	$(BIN)/corral run $(MODEL)

# headless Chromium + its driver for the web chat tests (Debian packages; needs root)
browser:
	test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || \
		{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; }

test: models browser
	$(BIN)/python -m pytest -q tests

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

bench: models
	$(BIN)/python bench/generate.py smollm2

clean:
	rm -rf $(VENV) build *.egg-info
