# The bastion appliance: builds, tests, image, boot.
# `make test` and `make run` install their own prerequisites (idempotently) on Debian as root.
#
#   make appliance [ARCH=aarch64|x86_64]   static musl bastion for the appliance
#   make image     [ARCH=...] [CONFIG=file] GPT disk image with a UKI (out/ARCH/disk.img)
#   make run                                boot the image under QEMU (Ctrl-C powers it down)
#   make boot-test                          boot the image under QEMU as a working bastion (with a
#                                           WireGuard client), then power it off; timings in
#                                           out/ARCH/boot-test.json
#   make lock-packages                      re-pin the Debian kernel and stub (image/packages.lock)

SHELL := /bin/bash
ARCH ?= aarch64
OUT ?= out
CARGO ?= cargo
HOST_ARCH := $(shell uname -m)

# Debian packages the tests need (real peers, real servers, the nft oracle).
TEST_PACKAGES := wireguard-go wireguard-tools nftables iproute2 python3 python3-venv iputils-ping dnsmasq-base iperf3 procps conntrack ethtool

# Python tools of the tests, in a virtualenv of our own (Debian 12 refuses system-wide pip):
# moto in server mode (the AWS API emulator) with boto3, cfn-lint for the deploy template, and
# aws-embedded-metrics (AWS's EMF library, Apache-2.0) to check the metric records.
# Pinned to the versions the tests were written against.
VENV := $(OUT)/venv
VENV_STAMP := $(VENV)/.installed-3
PYTHON_TEST_PACKAGES := moto[server]==5.2.5 cfn-lint==1.58.0 aws-embedded-metrics==3.5.0

# promtool (Prometheus's own checker of the text format), out of Debian's prometheus package
# without installing it (that would start a Prometheus server): `apt-get download`, unpacked.
PROMTOOL := $(OUT)/prometheus/usr/bin/promtool

# --- cross builds -----------------------------------------------------------------------------
TARGET := $(ARCH)-unknown-linux-musl
APPLIANCE_BIN := target/$(TARGET)/release/bastion
# ring compiles C and assembly: the Debian cross compiler for a foreign target, gcc for our own.
# Linking is done by rust-lld (.cargo/config.toml), so no cross binutils or musl-gcc is needed.
ifeq ($(ARCH),$(HOST_ARCH))
CROSS_CC := gcc
CROSS_PACKAGES := gcc libc6-dev
else
# The cross compiler only recommends its libc headers (ring's C includes <stdint.h>), and we
# install without recommends: name them.
CROSS_CC := $(ARCH)-linux-gnu-gcc
CROSS_PACKAGES = gcc-$(subst _,-,$(ARCH))-linux-gnu libc6-dev-$(DEB_ARCH)-cross
endif
ifeq ($(ARCH),aarch64)
FILE_ARCH := ARM aarch64
DEB_ARCH := arm64
QEMU_PACKAGES := qemu-system-arm qemu-efi-aarch64
else ifeq ($(ARCH),x86_64)
FILE_ARCH := x86-64
DEB_ARCH := amd64
QEMU_PACKAGES := qemu-system-x86 ovmf
else
$(error ARCH must be aarch64 or x86_64, not $(ARCH))
endif
# QEMU only recommends ipxe-qemu, which holds the virtio-net option ROM (efi-virtio.rom) that
# `-device virtio-net-pci` loads; without it QEMU refuses to start. Name it.
IMAGE_PACKAGES = $(CROSS_PACKAGES) $(QEMU_PACKAGES) ipxe-qemu file cpio

# Installs those of the Debian packages $(1) that are missing, without recommends (so every
# package a target needs is named); quiet and quick when all are there.
define apt_install_missing
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
endef

# --- the image --------------------------------------------------------------------------------
ARCH_OUT := $(OUT)/$(ARCH)
PACKAGE_CACHE := $(OUT)/cache/$(ARCH)
DISK := $(ARCH_OUT)/disk.img
VERSION ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)-$(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
IMAGE_BUILDER := target/release/bastion-image
HOST_BASTION := target/release/bastion
# An optional configuration to bake in (/etc/bastion/bastion.toml); validated with check-config
# by a host build of the same source.
CONFIG ?=

.PHONY: all build test test-deps gates unit-test integration-test fuzz clean bench-failover bench-cloudwatch bench-tools bench-aarch64 ha-demo \
        image-deps appliance image-builder kernel image run boot-test lock-packages bench

all: build

build:
	$(CARGO) build --release -p bastion

# Installs missing Debian packages and the Python virtualenv; a second run does nothing.
test-deps:
	$(call apt_install_missing,$(TEST_PACKAGES))
	@$(MAKE) --no-print-directory $(VENV_STAMP) $(PROMTOOL)

$(PROMTOOL):
	rm -rf $(OUT)/prometheus $(OUT)/cache/prometheus && mkdir -p $(OUT)/cache/prometheus
	cd $(OUT)/cache/prometheus && { apt-get download prometheus 2>/dev/null || { apt-get update -qq && apt-get download prometheus; }; }
	dpkg-deb -x $(OUT)/cache/prometheus/prometheus_*.deb $(OUT)/prometheus
	$(PROMTOOL) --version >/dev/null

$(VENV_STAMP):
	rm -rf $(VENV)
	/usr/bin/python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check $(PYTHON_TEST_PACKAGES)
	touch $@

unit-test:
	$(CARGO) test --release -p bastion
	$(CARGO) test --release -p bastion-aws
	$(CARGO) test --release -p bastion-image

# The namespace tests, and publish against moto with the real image (so the image comes first).
integration-test: build image-builder image
	BASTION_BIN=$(CURDIR)/target/release/bastion BASTION_IMAGE_BIN=$(CURDIR)/$(IMAGE_BUILDER) \
	  BASTION_DISK=$(CURDIR)/$(DISK) BASTION_VENV=$(CURDIR)/$(VENV) BASTION_PROMTOOL=$(CURDIR)/$(PROMTOOL) \
	  $(CARGO) test --release -p bastion-tests -- --test-threads=1 --include-ignored

test: test-deps gates unit-test integration-test boot-test

# The gates: formatting, lints as errors, licences (no GPL). Advisories are not checked: the
# RustSec database is not reachable from these machines (the licence script says so).
gates:
	@rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
	@rustup component list --installed | grep -q '^clippy' || rustup component add clippy
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --all-targets -- -D warnings
	python3 tests/gates/licences.py --self-test
	python3 tests/gates/licences.py

# Cross toolchain, QEMU and firmware; the Rust target. Idempotent and quiet when all is there.
image-deps:
	$(call apt_install_missing,$(IMAGE_PACKAGES))
	@rustup target list --installed | grep -qx $(TARGET) || rustup target add $(TARGET)

# The appliance binary: static musl, stripped (profile.release strip = true), checked with file(1).
appliance: image-deps
	CC_$(subst -,_,$(TARGET))=$(CROSS_CC) $(CARGO) build --release -p bastion --target $(TARGET)
	@info="$$(file -b $(APPLIANCE_BIN))"; echo "$(APPLIANCE_BIN): $$info"; \
	case "$$info" in *"$(FILE_ARCH)"*static*linked*stripped*) ;; \
	  *) echo "$(APPLIANCE_BIN) is not a static, stripped $(ARCH) binary" >&2; exit 1 ;; esac

image-builder:
	$(CARGO) build --release -p bastion-image

# The pinned Debian kernel and EFI stub, downloaded once into $(PACKAGE_CACHE) (verified against
# image/packages.lock) and unpacked with dpkg-deb. Re-unpacked only when the lock changes.
kernel: $(ARCH_OUT)/packages.stamp
$(ARCH_OUT)/packages.stamp: image/packages.lock image/fetch-packages.sh
	bash image/fetch-packages.sh fetch $(ARCH) $(PACKAGE_CACHE)
	rm -rf $(ARCH_OUT)/kernel $(ARCH_OUT)/stub
	mkdir -p $(ARCH_OUT)/kernel $(ARCH_OUT)/stub
	@while read -r arch pkg version sha origin; do \
	  [ "$$arch" = "$(ARCH)" ] || continue; \
	  deb="$(PACKAGE_CACHE)/$${pkg}_$${version//:/%3a}_$(DEB_ARCH).deb"; \
	  case "$$pkg" in linux-image-*) dest=kernel ;; *) dest=stub ;; esac; \
	  echo "unpacking $$deb"; dpkg-deb -x "$$deb" $(ARCH_OUT)/$$dest; \
	done < $(PACKAGE_CACHE)/resolved.lock
	cp $(PACKAGE_CACHE)/resolved.lock $(ARCH_OUT)/packages.used
	touch $@

lock-packages:
	bash image/fetch-packages.sh lock

image: appliance image-builder kernel $(if $(CONFIG),build)
	$(IMAGE_BUILDER) build --binary $(APPLIANCE_BIN) --kernel $(ARCH_OUT)/kernel --stub $(ARCH_OUT)/stub \
	  --rootfs rootfs --version $(VERSION) --initramfs-out $(ARCH_OUT)/initramfs.gz \
	  --packages $(ARCH_OUT)/packages.used \
	  $(if $(CONFIG),--config $(CONFIG) --check-config-with $(HOST_BASTION)) --out $(DISK)

# Boots the image like a fresh EC2 instance (UEFI, NVMe, serial console) with fresh keys, the
# config served as user-data by the IMDSv2 emulator (tests/imds/, when present) and a ready
# wg-quick client config in $(ARCH_OUT)/run/. Ctrl-C = the power button.
run: image build
	python3 tests/boot/run.py --arch $(ARCH) --image $(DISK) --bastion $(HOST_BASTION) --workdir $(ARCH_OUT)/run

# The boot test (tests/boot/boot_test.py): the real image under QEMU, in a network namespace of its
# own, with user-data from the IMDSv2 emulator: boot chain, modules, DHCP, IMDSv2, selftest PASS,
# health 200, a wireguard-go client through the forwarded port, drain and power-off on the power
# button. Boots once; the timings and results go to $(ARCH_OUT)/boot-test.json.
boot-test: test-deps image build
	python3 tests/boot/boot_test.py --arch $(ARCH) --image $(DISK) --initramfs $(ARCH_OUT)/initramfs.gz \
	  --bastion $(HOST_BASTION) --workdir $(ARCH_OUT)/boot-test --summary $(ARCH_OUT)/boot-test.json

# Throughput and CPU per GB of one bastion: `bastion run` against wireguard-go (bookworm's
# 0.0.20220316 and trixie's 0.0.20231211, with offloads) and boringtun-cli as the bastion, in the
# same run (docs/performance.md); the clients are trixie's wireguard-go (BENCH_ARGS="--client
# wireguard-go" for bookworm's). Not part of `make test`. boringtun-cli is built once into
# target/bench-tools; trixie's wireguard-go is fetched once as its Debian package with a private
# apt state there (no change to the system's apt); if either cannot be had the benchmark goes on
# without it. BENCH_ARGS passes options, e.g. BENCH_ARGS="--reps 5 --scenarios tcp-up,tcp-up-4".
BORINGTUN_VERSION := 0.7.1
BORINGTUN_ROOT := $(CURDIR)/target/bench-tools/boringtun-cli-$(BORINGTUN_VERSION)
WG_GO_NEW_VERSION := 0.0.20231211-1+b9
WG_GO_NEW_ROOT := $(CURDIR)/target/bench-tools/wireguard-go-$(WG_GO_NEW_VERSION)
WG_GO_NEW_APT := $(CURDIR)/target/bench-tools/apt-trixie
APT_TRIXIE := -o Dir::Etc::sourcelist=$(WG_GO_NEW_APT)/sources.list -o Dir::Etc::sourceparts=- \
  -o Dir::State::Lists=$(WG_GO_NEW_APT)/lists -o Dir::Cache=$(WG_GO_NEW_APT)/cache
BENCH_ARGS ?=
$(WG_GO_NEW_ROOT)/usr/bin/wireguard-go:
	mkdir -p $(WG_GO_NEW_APT)/lists/partial $(WG_GO_NEW_APT)/cache/archives/partial
	echo "deb http://deb.debian.org/debian trixie main" > $(WG_GO_NEW_APT)/sources.list
	apt-get $(APT_TRIXIE) update -qq
	cd $(WG_GO_NEW_APT) && apt-get $(APT_TRIXIE) download 'wireguard-go=$(WG_GO_NEW_VERSION)'
	dpkg-deb -x $(WG_GO_NEW_APT)/wireguard-go_*.deb $(WG_GO_NEW_ROOT)
	test -x $@
bench-tools:
	@test -x $(BORINGTUN_ROOT)/bin/boringtun-cli || \
	  $(CARGO) install boringtun-cli --version $(BORINGTUN_VERSION) --locked --root $(BORINGTUN_ROOT) || \
	  echo "bench: boringtun-cli $(BORINGTUN_VERSION) could not be built; comparing without it"
	@$(MAKE) --no-print-directory $(WG_GO_NEW_ROOT)/usr/bin/wireguard-go || \
	  echo "bench: wireguard-go $(WG_GO_NEW_VERSION) could not be fetched; comparing without it"
	@$(MAKE) --no-print-directory bench-aarch64 || \
	  echo "bench: no aarch64 build under QEMU user mode; no emulated aarch64 figures"
# The emulated aarch64 figures: the crypto floor and the bastion's data plane (`data-plane`:
# `bastion run`'s packet path without NAT) built for aarch64 and run under QEMU user mode
# (qemu-user-static; TCG, so they show relative costs, not a Graviton's). `bastion run` itself
# cannot run there: QEMU 7.2's user mode has no NETLINK_NETFILTER sockets for the nftables table.
AARCH64_RELEASE := $(CURDIR)/target/aarch64-unknown-linux-musl/release
bench-aarch64:
	$(call apt_install_missing,qemu-user-static gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
	@rustup target list --installed | grep -qx aarch64-unknown-linux-musl || rustup target add aarch64-unknown-linux-musl
	CC_aarch64_unknown_linux_musl=aarch64-linux-gnu-gcc $(CARGO) build --release --target aarch64-unknown-linux-musl \
	  -p bastion-tests --bin crypto-floor --bin data-plane
bench: test-deps build bench-tools
	BASTION_BIN=$(CURDIR)/target/release/bastion BORINGTUN_BIN=$(BORINGTUN_ROOT)/bin/boringtun-cli \
	  WIREGUARD_GO_NEW_BIN=$(WG_GO_NEW_ROOT)/usr/bin/wireguard-go \
	  QEMU_AARCH64=/usr/bin/qemu-aarch64-static CRYPTO_FLOOR_AARCH64_BIN=$(AARCH64_RELEASE)/crypto-floor \
	  DATA_PLANE_AARCH64_BIN=$(AARCH64_RELEASE)/data-plane \
	  BENCH_COMMAND="make bench$(if $(BENCH_ARGS), BENCH_ARGS='$(BENCH_ARGS)')" \
	  $(CARGO) bench -p bastion-tests --bench throughput -- --out $(CURDIR)/target/bench $(BENCH_ARGS)

# Failover behind the NLB model: {flush, sticky} LB x {stock, bastion watch} client x
# {wireguard-go, ours} bastions, an active and an idle client; then stock clients under the
# docs and article models with and without the survivors acting (kill -9, the instance gone,
# a planned scale-in); table, JSON and SVG in target/bench. About 30 minutes. FAILOVER_ARGS
# passes options (--suite watch|stock|gone, --interval S, --give-up S).
FAILOVER_ARGS ?=
bench-failover: test-deps build
	BASTION_BIN=$(CURDIR)/target/release/bastion \
	  $(CARGO) bench -p bastion-tests --bench failover -- --out $(CURDIR)/target/bench $(FAILOVER_ARGS)

# CloudWatch without an answer for 10 minutes (the audit suite's outage test, longer): 200 Mbit/s
# of UDP through the tunnel, a second client pinging every 50 ms, ~100 log lines a second; the
# pings lost, the bastion's RSS, what the queue dropped, and the shipper's CPU at 100 lines/s.
bench-cloudwatch: test-deps build
	BASTION_BIN=$(CURDIR)/target/release/bastion BASTION_VENV=$(CURDIR)/$(VENV) BASTION_AUDIT_OUTAGE_SECONDS=600 \
	  $(CARGO) test --release -p bastion-tests --test audit -- --include-ignored --nocapture cloudwatch_without

# One failover, narrated: two of our bastions behind the sticky NLB model (health checks every
# 5 s, 2 to change), a client with bastion watch doing a request every 100 ms; kill -9 of the
# bastion serving it.
ha-demo: test-deps build
	BASTION_BIN=$(CURDIR)/target/release/bastion \
	  $(CARGO) bench -p bastion-tests --bench failover -- --demo $(FAILOVER_ARGS)

# The property tests of every parser of outside input, with many more cases than `make test`
# runs (256 each). FUZZ_CASES=N to change.
FUZZ_CASES ?= 100000
fuzz:
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test --release -p bastion fuzz_tests

clean:
	$(CARGO) clean
	rm -rf $(OUT)
