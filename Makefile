# The README's two set-up commands: `make demo` and `make test`. Both create .venv and
# install what they need on first use, and are quick no-ops when already set up.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch first, pinned: on this kind of machine 2.13.0 is a local CPU wheel, any other
# version would download gigabytes.
TORCH := torch==2.13.0
EXAMPLE := docs/examples/mi-ideas-example-plugin

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test install clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.torch: | $(PY)
	$(PIP) install --disable-pip-version-check -q $(TORCH)
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(PIP) install --disable-pip-version-check -q -e '.[dev]'
	touch $@

$(VENV)/.example: $(EXAMPLE)/pyproject.toml $(VENV)/.installed
	$(PIP) install --disable-pip-version-check -q -e $(EXAMPLE)
	touch $@

install: $(VENV)/.installed

# The headline idea, activation-plateaus, with its quick preset on the zoo model; --index
# also writes runs/index.html. It ends with the run page's path, the headline numbers next
# to their controls and the one-sentence answer. Progress shows as bars on a terminal and
# as one line per stage in a log.
demo: $(VENV)/.installed
	$(VENV)/bin/mi-ideas run activation-plateaus --preset quick --out runs --index

test: $(VENV)/.example
	$(VENV)/bin/lint-imports
	MI_IDEAS_STRICT_PLUGINS=1 $(PY) -m pytest -q tests $(EXAMPLE)/tests

clean:
	rm -rf $(VENV) runs
