# Two commands set everything up on a fresh machine (README):
#   make book   - create .venv, install, run the demo pipeline, build the book strictly
#   make test   - create .venv (and .venv-saelens), install, run the tests
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PROFILE ?= demo
# Extra pipeline arguments, e.g. make pipeline ARGS="--from encode --set encode.batch_size=32"
ARGS ?=
STAMP := $(VENV)/.installed
# SAELens conflicts with our pins, so it lives in its own venv (parity test, SAE training benchmark).
SAELENS_VENV := .venv-saelens
SAELENS_STAMP := $(SAELENS_VENV)/.installed

.PHONY: install browser pipeline book book-only check-book check-front-matter test lab benchmark solutions clean clean-artifacts

install: $(STAMP)

$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --requirement requirements.txt
	$(PY) -m pip install --quiet --no-deps --requirement requirements-nodeps.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation --editable .
	$(PY) -m ipykernel install --sys-prefix --name saerad --display-name "SAE-Rad (.venv)" >/dev/null
	@touch $@

# The reader-study page test drives the system Chromium through Playwright; no browser is downloaded.
# Without root or sudo (or without apt-get) it says how to install it, and that test is skipped.
browser:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then exit 0; fi; \
	if [ "$$(id -u)" -eq 0 ]; then sudo=""; elif command -v sudo >/dev/null 2>&1; then sudo="sudo"; \
	else echo "make browser: chromium is missing and installing it needs root; run as root:"; \
	     echo "  apt-get update && apt-get install -y --no-install-recommends chromium"; \
	     echo "(tests/test_reader_page.py skips its browser test until then)"; exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
	     echo "make browser: chromium is missing and there is no apt-get; install Chromium with the system's package manager"; exit 0; fi; \
	echo "make browser: installing the system chromium"; \
	{ $$sudo apt-get update && $$sudo apt-get install -y --no-install-recommends chromium; } || \
	echo "make browser: installing chromium failed; tests/test_reader_page.py will skip its browser test"

$(SAELENS_VENV): $(SAELENS_STAMP)

$(SAELENS_STAMP): requirements-saelens.txt
	@test -x $(SAELENS_VENV)/bin/python || $(PYTHON) -m venv $(SAELENS_VENV)
	$(SAELENS_VENV)/bin/python -m pip install --quiet --requirement requirements-saelens.txt
	@touch $@

pipeline: install
	$(PY) -m saerad.pipeline --profile $(PROFILE) $(ARGS)

book: pipeline book-only

# The book shows one profile: book/chapters/ becomes a copy of $(PROFILE)'s executed chapters
# (artifacts/$(PROFILE)/chapters/, written by the pipeline), then the book is built from it.
book-only: install
	$(PY) -m saerad.pipeline --profile $(PROFILE) --publish
	$(VENV)/bin/jupyter-book build . --warningiserror --keep-going --builder html
	@echo "The book is in _build/html/index.html"

# Every chapter page opened in headless Chromium: tables present, images loaded, no error output,
# no JavaScript error, no request to the network.
check-book: install browser
	$(PY) -m saerad.book_check _build/html

# The front matter's chapter table (book/rerun.md: parameters, demo times) against the latest run's
# stage.json records: parameters must match, times within 25 % (or 5 s). The times are those of the project's
# 2-core machine, so this is a check of that machine's runs, not of CI runners.
check-front-matter: install
	$(PY) -m saerad.front_matter --check book/rerun.md

# pytest exits 5 when it collects no test; that is not a failure of the code.
test: install $(SAELENS_STAMP) browser
	@$(PY) -m pytest tests; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$status

# JupyterLab at the repository root, reachable from this machine only. Kernels start in the notebook's
# folder; the chapters resolve relative paths against the repository root (saerad.paths.project_path).
# Jupyter refuses root unless told, so --allow-root is added only when running as root (e.g. a container).
# The server gives each kernel CurveZMQ keys, as the pipeline does, so no kernel warns "Kernel is running over
# TCP without encryption" (python -m saerad.kernel_encryption prints the option, or nothing without CurveZMQ).
# More options: make lab LAB_ARGS="--port=8899 --no-browser"
LAB_ARGS ?=
lab: install
	$(VENV)/bin/jupyter lab --ServerApp.root_dir="$(CURDIR)" --ServerApp.ip=127.0.0.1 $$(test "$$(id -u)" -eq 0 && echo --allow-root) $$($(PY) -m saerad.kernel_encryption) $(LAB_ARGS)

# The worked solutions of the exercises: real runs with the changed parameters, stored in
# book/solutions/<profile>/ with a fingerprint (not part of `make book`: they take minutes each).
solutions: install
	$(PY) -m saerad.book.solutions --profile $(PROFILE) $(ARGS)

benchmark: install $(SAELENS_STAMP)
	$(PY) benchmarks/encoder_throughput.py
	$(PY) benchmarks/sae_training.py
	$(PY) benchmarks/top_activations.py
	$(PY) benchmarks/paper_shapes.py

clean:
	rm -rf _build book/chapters/*.ipynb

clean-artifacts:
	rm -rf artifacts
