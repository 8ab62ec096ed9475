# Modelway — the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint unit integration e2e tools bench bench-sidecar bench-controller bench-policy bench-redaction bench-guardrails bench-limits bench-experiments bench-instructions venv clean
.PHONY: kind-up chart-crds image-lock node-up

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

## demo: fake providers + `modelway dev` (controller and sidecar), driven by the official SDKs
demo: $(STAMP)
	$(PY) -m examples.demo

## test: lint, then everything (builds the real-component tools on first use)
test: $(STAMP) tools lint
	$(PY) -m pytest -q -p no:cacheprovider

## lint: ruff (lint and format) and mypy, configured in pyproject.toml
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

integration: $(STAMP)
	$(PY) -m pytest -q tests/integration

e2e: $(STAMP) tools
	$(PY) -m pytest -q tests/e2e

## tools: kube-apiserver, etcd, kubectl, helm, jaeger, a node's binaries, coredns (Go, pinned),
## redis, containerd, runc, CNI plugins, buildah, mmdebstrap (Debian) and the test images
tools:
	bash tests/tools/build.sh

## bench: the sidecar against a bare aiohttp pass-through (wrk), the lean span recorder against the
## OpenTelemetry SDK, the controller's push to 1,000 sidecars, the personal-data scan's cost per 10 KB of prompt,
## what masking costs per 10 KB of prompt and restoring per streamed answer, what a limit check costs
## (in process, and one Redis round trip; alone, and through the sidecar), what one guardrail adds per request,
## and the experiments' stop rule on simulated A/A and A/B tests
bench: bench-sidecar bench-controller bench-policy bench-redaction bench-guardrails bench-limits bench-experiments

bench-sidecar: $(STAMP)
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(PY) -m bench.sidecar
	$(PY) -m bench.http_client
	$(PY) -m bench.span_paths
	$(PY) -m bench.passthrough

## bench-instructions: what telemetry costs per request in CPU instructions (valgrind: slow, but
## steady on a busy machine, where the req/s ratios of bench-sidecar are noise)
bench-instructions: $(STAMP)
	command -v valgrind >/dev/null || (apt-get update -qq && apt-get install -y -qq valgrind)
	$(PY) -m bench.sidecar_instructions
	$(PY) -m bench.sidecar_instructions --stream

bench-controller: $(STAMP) tools
	$(PY) -m bench.controller

bench-policy: $(STAMP)
	$(PY) -m bench.personal_data

## bench-redaction: masking a request and restoring its streamed answer, against no redaction in the same run
bench-redaction: $(STAMP)
	$(PY) -m bench.redaction

## bench-guardrails: one allowing guardrail on loopback against none, per request (plain and streamed), same run
bench-guardrails: $(STAMP)
	$(PY) -m bench.guardrails

## bench-limits: the limiter alone, then the sidecar without limits, with one in process and one in Redis (wrk, 1 connection)
bench-limits: $(STAMP) tools
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(PY) -m bench.limits
	$(PY) -m bench.limits_sidecar

bench-experiments: $(STAMP)
	$(PY) -m bench.experiments

## node-up: the test suite's one-node cluster (real kubelet, containerd, the chart's image) until Ctrl-C (root, Linux)
node-up: $(STAMP) tools
	$(PY) -m tests.harness.node_up

## kind-up: a kind cluster with the image, the chart and examples/k8s/ (needs docker, kind, kubectl, helm)
kind-up:
	bash hack/kind-up.sh

## image-lock: re-resolve requirements.lock (the image's exact Python packages, with hashes)
## and the test app image's (tests/tools/image/app-requirements.in: the official openai SDK, OpenTelemetry)
image-lock:
	$(PYTHON) -m venv build/uv && build/uv/bin/pip install -q uv
	echo 'setuptools>=68' | build/uv/bin/uv pip compile pyproject.toml - --extra fast --generate-hashes \
	  --python-version 3.11 --python-platform x86_64-manylinux_2_36 \
	  --custom-compile-command 'make image-lock' -o requirements.lock
	build/uv/bin/uv pip compile tests/tools/image/app-requirements.in --generate-hashes \
	  --python-version 3.11 --python-platform x86_64-manylinux_2_36 \
	  --custom-compile-command 'make image-lock' -o tests/tools/image/app-requirements.txt

## chart-crds: copy crds/ into the chart (a unit test fails while they differ)
chart-crds:
	rm -f charts/modelway/crds/*.yaml
	cp crds/*.yaml charts/modelway/crds/

clean:
	rm -rf $(VENV) .tools build *.egg-info
