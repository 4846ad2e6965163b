# The bastion appliance: builds, tests, image, boot.
# `make test` and `make run` install their own prerequisites (idempotently) on Debian as root.

SHELL := /bin/bash
ARCH ?= aarch64
OUT ?= out
CARGO ?= cargo

# Debian packages the tests need (real peers, real servers, the nft oracle).
TEST_PACKAGES := wireguard-go wireguard-tools nftables iproute2 python3 iputils-ping dnsmasq-base iperf3 procps conntrack

.PHONY: all test test-deps unit-test integration-test clean

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

clean:
	$(CARGO) clean
	rm -rf $(OUT)
