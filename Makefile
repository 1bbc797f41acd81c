# recsys — the two commands for a fresh machine are `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo demo-drift test test-slow lint protos infra-up infra-down infra-status clean-var images test-k8s k8s-up k8s-down

## setup: virtualenv with the pinned stack, generated code checked, Kafka and Redis installed
setup: $(STAMP) var/kafka/lib/.installed
	@bash deploy/local/redis.sh install
	@bash deploy/local/observability.sh install

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q torch==2.13.0
	$(BIN)/pip install --disable-pip-version-check -q -e '.[test]'
	$(BIN)/pip check
	touch $(STAMP)

var/kafka/lib/.installed: deploy/local/kafka/pom.xml
	bash deploy/local/kafka.sh install
	touch $@

## demo: the main job (data, training, every service on embedded defaults, traffic, summary)
demo: setup
	bash deploy/local/infra.sh up
	$(BIN)/recsys demo

## demo-drift: the learning loop closing by itself after the users' tastes shift (its own Kafka; ~15 min)
demo-drift: setup
	$(BIN)/recsys demo --scenario drift

## test: lint, generated-code freshness, unit + integration + e2e tests (fixtures start Kafka/Redis)
test: setup lint
	$(BIN)/recsys protos --check
	$(BIN)/python -m pytest -q -ra -m "not slow" tests

## test-slow: the tests `make test` leaves out for time (e.g. a second whole stack killed with SIGKILL)
test-slow: setup
	$(BIN)/python -m pytest -q -ra -m slow tests

## images: build every docker/Dockerfile target with the project's own Docker engine (deploy/images/build.sh)
images:
	bash deploy/images/build.sh

## test-k8s: the images run as the chart runs them, and the chart on a real API server (tests/k8s; slow:
## the first run builds Kubernetes, kwok and the gRPC tools from the Go module proxy and caches them)
test-k8s: setup
	bash deploy/k8s-local/build.sh
	bash deploy/images/build.sh
	RECSYS_K8S_TESTS=1 $(BIN)/python -m pytest -q -ra -p no:cacheprovider tests/k8s

k8s-up: setup
	bash deploy/k8s-local/cluster.sh up

k8s-down:
	bash deploy/k8s-local/cluster.sh down

lint: $(STAMP)
	$(BIN)/ruff check services tests benchmarks
	$(BIN)/lint-imports

protos: $(STAMP)
	$(BIN)/recsys protos

infra-up: setup
	bash deploy/local/infra.sh up

infra-down:
	bash deploy/local/infra.sh down

infra-status:
	bash deploy/local/infra.sh status
