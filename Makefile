# bulk-user-import. `make help` lists the targets.
GO      ?= go
BIN     := bin
GOFLAGS ?=
export GOFLAGS

.PHONY: help build demo test test-short chaos bench image vet staticcheck fmt clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

build: ## build bin/splitter, bin/worker and bin/devstack
	$(GO) build -o $(BIN)/splitter ./splitter
	$(GO) build -o $(BIN)/worker ./worker
	$(GO) build -o $(BIN)/devstack ./localstack/devstack

demo: build ## run the whole pipeline on the embedded local stack with the sample CSV
	./localstack/demo.sh

test: vet staticcheck ## vet, staticcheck and every test (needs PostgreSQL; see README)
	$(GO) test -count=1 -timeout 15m ./...

chaos: ## the chaos test at full size: 2,500 rows through 4 workers under faults, kills and a database restart
	BUI_CHAOS_ROWS=2500 BUI_CHAOS_TIMEOUT_SECONDS=900 $(GO) test -count=1 -v -timeout 20m -run TestChaos ./localstack/chaos

bench: build ## measure the splitter, the workers, the cost per row and the fleet budgets; writes localstack/bench/results.md (about 25 minutes)
	$(GO) run ./localstack/bench -bin $(BIN) -out localstack/bench/results.md

IMAGE ?= bulk-user-import:dev
PLATFORM ?= linux/amd64
image: ## build the container image with both binaries (needs Docker; IMAGE=name:tag, PLATFORM=linux/arm64 for ARM64 tasks)
	docker build --platform $(PLATFORM) -f deploy/Dockerfile -t $(IMAGE) .

test-short: ## the tests without vet and staticcheck
	$(GO) test -count=1 -timeout 15m ./...

vet: ## go vet
	$(GO) vet ./...

staticcheck: ## staticcheck (pinned in go.mod as a tool)
	$(GO) tool staticcheck ./...

fmt: ## gofmt the tree
	gofmt -w $$(git ls-files '*.go')

clean: ## remove build output
	rm -rf $(BIN)
