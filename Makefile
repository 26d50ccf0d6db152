# Every entry point of the project. `make help` lists them.
SHELL := bash
.DEFAULT_GOAL := help

EMULATOR := infra/emulator/emulator.sh

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

.PHONY: test
test: ## Everything CI runs: format, lint, unit tests, emulator, integration tests
	infra/test.sh

.PHONY: fmt
fmt: ## Format the code
	cargo fmt --all

.PHONY: lint
lint: ## Check formatting and clippy lints
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

.PHONY: unit
unit: ## Unit tests (no emulator needed)
	cargo test --workspace --exclude integration-tests

.PHONY: integration
integration: ## Integration tests against a running emulator (see emulator-up)
	eval "$$($(EMULATOR) env)" && cargo test -p integration-tests

.PHONY: emulator-up
emulator-up: ## Start the no-Docker AWS emulator on 127.0.0.1 (installs it on first use)
	$(EMULATOR) up

.PHONY: emulator-down
emulator-down: ## Stop the emulator started by emulator-up
	$(EMULATOR) down

.PHONY: emulator-env
emulator-env: ## Print the endpoint variables: eval "$$(make -s emulator-env)"
	@$(EMULATOR) env
