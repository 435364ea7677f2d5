# RigOS. On a fresh machine `make demo` and `make test` are the only two
# set-up commands: both install what they need (hack/deps.sh).
SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/.bin
FUZZTIME ?= 20s

.PHONY: help deps build test test-unit fuzz lint generate check-generated demo bench loadgen clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

deps: ## install the Debian packages the build and tests need
	@hack/deps.sh

build: deps ## build attest and agent into .bin/
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/attest ./attest
	$(GO) build -o $(BIN)/agent ./agent
	CGO_ENABLED=0 $(GO) build -o $(BIN)/agent-static ./agent

test: deps check-generated lint ## run every test tier (unit with -race, fuzz seeds, service tests)
	$(GO) test -race -count=1 ./...
	CGO_ENABLED=0 $(GO) build ./agent ./attest
	$(MAKE) --no-print-directory fuzz FUZZTIME=5s

fuzz: ## run each fuzz target for FUZZTIME
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "fuzz $$pkg $$f"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg >/dev/null || exit 1; \
	  done; \
	done

lint: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi
	$(GO) vet ./...

$(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc: go.mod
	@mkdir -p $(BIN)
	GOBIN=$(BIN) $(GO) install tool

generate: deps $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc ## regenerate protobuf/gRPC code
	PATH=$(BIN):$$PATH $(GO) generate ./pkg/api/...

check-generated: generate ## fail if generated code is stale
	@git diff --exit-code -- pkg/api || { echo "generated code is stale: run make generate and commit"; exit 1; }

demo: build ## verifier + agent on the TPM simulator: enrol, trusted, spot checks
	BIN=$(BIN) hack/demo.sh

bench: deps ## appraisal benchmarks
	$(GO) test -run '^$$' -bench . -benchmem ./pkg/attestation/

loadgen: deps ## many software-TPM agents against the real verifier (NODES=1000)
	$(GO) run ./hack/loadgen -nodes $${NODES:-1000}

clean:
	rm -rf $(BIN) .demo
