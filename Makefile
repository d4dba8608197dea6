# Two commands on a fresh machine: `make run` and `make test` (README).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run demo test bench bench-hl7 bench-dicom bench-delivery bench-indicators bench-soak lint install install-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[test]'
	# the console's browser tests: Debian chromium + chromium-driver when missing
	sh scripts/install-browser.sh || echo "chromium not installed: the browser tests will skip, saying why"
	touch $@

# the official ANS schematrons run in SaxonC-HE (saxonche, a dependency) with the ISO
# skeleton shipped in lxml; compiled once into build/schematron (ADR 0021, issue 26)
install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

run: install
	$(BIN)/teleimagerie serve

# the first order -> report loop in five minutes (demo/README.md)
demo: install-test
	$(BIN)/python -m demo

test: install-test
	$(BIN)/ruff check teleimagerie fhir_server adapters profiles terminology tests benchmarks tools demo
	$(BIN)/mypy teleimagerie fhir_server adapters
	$(BIN)/pytest -n 2

bench: install-test
	$(BIN)/python -m benchmarks.run
	$(BIN)/python -m benchmarks.hl7
	$(BIN)/python -m benchmarks.dicom
	$(BIN)/python -m benchmarks.delivery

bench-hl7: install-test
	$(BIN)/python -m benchmarks.hl7

bench-dicom: install-test
	$(BIN)/python -m benchmarks.dicom

bench-delivery: install-test
	$(BIN)/python -m benchmarks.delivery

bench-indicators: install-test
	$(BIN)/python -m benchmarks.indicators

# mixed HTTP + MLLP + DICOM load at 80 % of the measured maximum for TELEIMG_SOAK_SECONDS
# (default 1800): RSS of every process and p50/p99 per minute; exit 1 on growth or drift
bench-soak: install-test
	$(BIN)/python -m benchmarks.soak

lint: install-test
	$(BIN)/ruff check .
	$(BIN)/mypy teleimagerie fhir_server adapters

clean:
	rm -rf $(VENV) data build .pytest_cache .mypy_cache .ruff_cache
