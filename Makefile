# The two set-up commands: `make demo` and `make test`. Each does every step itself on a fresh Debian machine:
# missing system packages, the virtual environment, the Python dependencies.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS := hub,kiosk,gateway,qr,api,dev
DEMO_ARGS ?=

.PHONY: demo test system-packages venv lint bench docs clean

demo: venv
	$(PY) -m museum demo $(DEMO_ARGS)

# The benchmark runs before the tests so that pytest's summary is the last line CI reads.
test: venv
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m bench.bus
	$(PY) -m bench.kiosk
	$(PY) -m bench.ble
	$(PY) -m bench.qr
	$(PY) -m bench.companion
	$(PY) -m pytest -q

bench: venv
	$(PY) -m bench.bus
	$(PY) -m bench.kiosk
	$(PY) -m bench.ble
	$(PY) -m bench.qr
	$(PY) -m bench.companion

docs: venv
	$(PY) -m museum docs events

system-packages:
	@bash deploy/system-packages.sh

venv: system-packages $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $@

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
