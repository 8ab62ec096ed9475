# Modelway — the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test unit integration e2e tools bench venv clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

## demo: fake providers + the sidecar, driven by the official SDKs
demo: $(STAMP)
	$(PY) -m examples.demo

## test: everything (builds the real-component tools on first use)
test: $(STAMP) tools
	$(PY) -m pytest -q -p no:cacheprovider

unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

integration: $(STAMP)
	$(PY) -m pytest -q tests/integration

## tools: kube-apiserver, etcd, kubectl, helm, jaeger (Go, pinned) and redis (Debian)
tools:
	bash tests/tools/build.sh

## bench: sidecar vs a bare aiohttp pass-through, under wrk
bench: $(STAMP)
	$(PY) -m bench.sidecar

clean:
	rm -rf $(VENV) .tools build *.egg-info
