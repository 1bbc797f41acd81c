# recsys — the two commands for a fresh machine are `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint protos infra-up infra-down infra-status clean-var

## setup: virtualenv with the pinned stack, generated code checked, Kafka and Redis installed
setup: $(STAMP) var/kafka/lib/.installed
	@bash deploy/local/redis.sh install

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

## test: lint, generated-code freshness, unit + integration + e2e tests (fixtures start Kafka/Redis)
test: setup lint
	$(BIN)/recsys protos --check
	$(BIN)/python -m pytest -q -ra tests

lint: $(STAMP)
	$(BIN)/ruff check services tests benchmarks

protos: $(STAMP)
	$(BIN)/recsys protos

infra-up: setup
	bash deploy/local/infra.sh up

infra-down:
	bash deploy/local/infra.sh down

infra-status:
	bash deploy/local/infra.sh status
