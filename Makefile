# Every entry point of the project. `make help` lists them.
SHELL := bash
.DEFAULT_GOAL := help

EMULATOR := infra/emulator/emulator.sh
LOCALSTACK := infra/localstack/localstack.sh
TOOLS := infra/tools/tools.sh

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

.PHONY: demo
demo: ## Each domain's pipeline locally: a burst of 500 requests, watched live and checked (REQUESTS=N, FLAKY=0.2, DOMAINS="name ...")
	infra/demo.sh --requests $${REQUESTS:-500} --flaky-downstream $${FLAKY:-0}

.PHONY: trace
trace: ## One job's spans from the last demo or run, as a tree: requests, records, continuations, retries (ID=job id)
	@test -n "$(ID)" || { echo 'usage: make trace ID=<a job id, e.g. the one make demo prints>' >&2; exit 2; }
	cargo run --quiet -p local-runner -- trace '$(ID)'

.PHONY: chaos
chaos: ## Chaos soak of each domain's pipeline at concurrency 2, 5, 10: kills, duplicates, AWS faults, a capacity-limited downstream (REQUESTS=N, DOMAINS="name ...") -> target/chaos/report.json
	infra/chaos.sh

.PHONY: run
run: ## A domain's pipeline kept up against the emulator: its API on 127.0.0.1:8080 (DOMAIN=name, default the first under tests/domains/)
	infra/run.sh

.PHONY: test
test: ## Everything CI runs: format, lint, unit tests, emulator, integration tests
	infra/test.sh

.PHONY: fork-check
fork-check: ## In a scratch copy, remove an example as README "Fork it" says, then make check, the integration tests and template validation there (NAME=example; default: each one)
	infra/fork-check.sh $${NAME:-}

.PHONY: check
check: ## The fast inner loop, no emulator: format, clippy, unit tests, the library built and tested alone
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo test --workspace --exclude '*-tests'
	cargo test -p queue-worker

.PHONY: fmt
fmt: ## Format the code
	cargo fmt --all

.PHONY: lint
lint: ## Check formatting and clippy lints
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

.PHONY: unit
unit: ## Unit tests (no emulator needed)
	cargo test --workspace --exclude '*-tests'

.PHONY: integration
integration: ## Integration tests against a running emulator (see emulator-up)
	eval "$$($(EMULATOR) env)" && cargo test -p '*-tests'

.PHONY: emulator-up
emulator-up: ## Start the no-Docker AWS emulator on 127.0.0.1 (installs it on first use)
	$(EMULATOR) up

.PHONY: emulator-down
emulator-down: ## Stop the emulator started by emulator-up
	$(EMULATOR) down

.PHONY: emulator-env
emulator-env: ## Print the endpoint variables: eval "$(make -s emulator-env)"
	@$(EMULATOR) env

.PHONY: localstack-up
localstack-up: ## Start LocalStack on 127.0.0.1:4566 (Docker if available, else host mode + emulator)
	$(LOCALSTACK) up

.PHONY: localstack-down
localstack-down: ## Stop what localstack-up started
	$(LOCALSTACK) down

.PHONY: localstack-env
localstack-env: ## Print LocalStack's endpoint variables: eval "$(make -s localstack-env)"
	@$(LOCALSTACK) env

.PHONY: deploy-local
deploy-local: ## sam build + sam deploy of template.yaml into LocalStack (started if needed; without Docker: resources only)
	infra/localstack/deploy.sh up

.PHONY: destroy-local
destroy-local: ## sam delete of the deploy-local stack (LocalStack keeps running)
	infra/localstack/deploy.sh down

.PHONY: test-localstack
test-localstack: ## Integration tests and the demo against LocalStack (started and stopped here)
	infra/test-localstack.sh

.PHONY: bench
bench: ## Every benchmark (size, init time, cold start over TLS, overhead vs Powertools, each domain's benches, drain, chaos) -> target/bench/report.md (DOMAINS="name ...")
	infra/bench/bench.sh

.PHONY: validate
validate: ## Validate template.yaml (sam validate --lint, cfn-lint)
	$(TOOLS) sam validate --lint --region us-east-1
	$(TOOLS) cfn-lint template.yaml

.PHONY: build
build: ## Build both functions for Lambda with SAM (arm64 unless ARCH=x86_64)
	$(TOOLS) sam build --parameter-overrides Architecture=$${ARCH:-arm64}

.PHONY: deploy
deploy: build ## Deploy the stack (the first time: sam deploy --guided)
	$(TOOLS) sam deploy

.PHONY: destroy
destroy: ## Delete the stack and everything in it
	$(TOOLS) sam delete
