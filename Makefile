# The bastion appliance: builds, tests, image, boot.
# `make test` and `make run` install their own prerequisites (idempotently) on Debian as root.

SHELL := /bin/bash
ARCH ?= aarch64
OUT ?= out
CARGO ?= cargo

# Debian packages the tests need (real peers, real servers, the nft oracle).
TEST_PACKAGES := wireguard-go wireguard-tools nftables iproute2 python3 iputils-ping dnsmasq-base iperf3 procps

.PHONY: all test test-deps unit-test integration-test bench clean

all: build

build:
	$(CARGO) build --release -p bastion

# Installs missing Debian packages only; a second run does nothing.
test-deps:
	@missing=""; for p in $(TEST_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

unit-test:
	$(CARGO) test --release -p bastion

integration-test: build
	BASTION_BIN=$(CURDIR)/target/release/bastion $(CARGO) test --release -p bastion-tests -- --test-threads=1

test: test-deps unit-test integration-test

# Throughput and CPU per GB of one bastion: `bastion run` against wireguard-go and boringtun-cli
# as the bastion, in the same run (README-bench.md). Not part of `make test`. boringtun-cli is
# built once into target/; if it cannot be built the benchmark compares with wireguard-go only.
# BENCH_ARGS passes options, e.g. BENCH_ARGS="--reps 5 --scenarios tcp-up,tcp-up-4".
BORINGTUN_VERSION := 0.7.1
BORINGTUN_ROOT := $(CURDIR)/target/bench-tools/boringtun-cli-$(BORINGTUN_VERSION)
BENCH_ARGS ?=
bench: test-deps build
	@test -x $(BORINGTUN_ROOT)/bin/boringtun-cli || \
	  $(CARGO) install boringtun-cli --version $(BORINGTUN_VERSION) --locked --root $(BORINGTUN_ROOT) || \
	  echo "bench: boringtun-cli $(BORINGTUN_VERSION) could not be built; comparing with wireguard-go only"
	BASTION_BIN=$(CURDIR)/target/release/bastion BORINGTUN_BIN=$(BORINGTUN_ROOT)/bin/boringtun-cli \
	  BENCH_COMMAND="make bench$(if $(BENCH_ARGS), BENCH_ARGS='$(BENCH_ARGS)')" \
	  $(CARGO) bench -p bastion-tests --bench throughput -- --out $(CURDIR)/target/bench $(BENCH_ARGS)

clean:
	$(CARGO) clean
	rm -rf $(OUT)
