VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: demo test test-long tour install install-test bench clean

$(PY):
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# Bytecode for the editable install, written even where PYTHONDONTWRITEBYTECODE is set: every
# `cocharge` command (and the tests run hundreds) starts without compiling its modules again.
install: $(PY)
	$(PIP) install -q -e .
	$(PY) -m compileall -q cocharge

install-test: $(PY)
	$(PIP) install -q -e '.[test]'
	$(PY) -m compileall -q cocharge

demo: install
	$(VENV)/bin/cocharge demo

# Workers of the test suite: most tests wait on sockets, so twice the cores keeps them busy.
WORKERS ?= 4

test: install-test
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -n $(WORKERS)

# The long mode: the junk storm with 100,000 frames, the mutation fuzzer with 2,000 examples.
test-long: install-test
	COCHARGE_FUZZ_FRAMES=100000 COCHARGE_FUZZ_EXAMPLES=2000 $(PY) -m pytest -s \
		tests/gateway/test_fuzz_storm.py tests/gateway/test_mutated_frames.py

tour: install-test
	$(PY) -m pytest tests/cli/test_readme_tour.py

bench: install-test
	$(PY) benchmarks/fleet.py
	$(PY) benchmarks/fleet.py --kill
	$(PY) benchmarks/gateway_throughput.py
	$(PY) benchmarks/ledger_throughput.py
	$(PY) benchmarks/fleet_page.py
	$(PY) benchmarks/journal_batches.py
	$(PY) benchmarks/password_guessing.py
	$(PY) benchmarks/allocation.py --e2e 200
	$(PY) benchmarks/startup.py
	$(PY) benchmarks/cluster.py
	$(PY) benchmarks/workers_paired.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
