# SPDX-License-Identifier: Apache-2.0
# Front door. Each target installs what it needs (Debian packages, as root),
# configures, builds and runs. `make help` lists them.

JOBS ?= $(shell nproc)
DEV := build/dev
HMK := $(DEV)/bin/hmk
SYSTEM ?= examples/figure1/system.toml
SCRIPT ?= examples/figure1/demo.hmks

.PHONY: help deps build run test bench campaign asan tsan clang format format-check clean

help:
	@echo "make run           boot the Figure-1 system and run its demo script"
	@echo "make test          build and run the whole test suite (ctest)"
	@echo "make bench         build and run the benchmarks (release build)"
	@echo "make campaign      the long fault-injection campaign over Figure 1 (FAULTS, SEED)"
	@echo "make asan|tsan     the test suite under ASan+UBSan / ThreadSanitizer"
	@echo "make clang         build with clang 14, warnings as errors, and test"
	@echo "make format        clang-format the sources (format-check: only check)"

deps:
	@bash scripts/install-deps.sh

$(DEV)/build.ninja: | deps
	cmake --preset dev

build: deps $(DEV)/build.ninja
	cmake --build --preset dev -j $(JOBS)

# On a terminal: the system and its shell (quit stops it); otherwise the demo.
run: build
	@if [ -t 0 ]; then $(HMK) run $(SYSTEM) --shell --log-level warn; \
	else $(HMK) run $(SYSTEM) --script $(SCRIPT) --stats; fi

test: build
	ctest --preset dev -j $(JOBS)

bench: deps
	cmake --preset release
	cmake --build --preset release -j $(JOBS)
	build/release/bin/hmk_bench --benchmark_counters_tabular=true
	build/release/bin/hmk_ipc_bench
	build/release/bin/hmk_delivery_bench
	build/release/bin/hmk_recovery_bench
	build/release/bin/hmk_handoff_bench
	build/release/bin/hmk_fs_bench

# The long campaign (docs/inject.md), on a copy of Figure 1 in build/campaign.
FAULTS ?= 1000000
SEED ?= 1
campaign: build
	rm -rf build/campaign && mkdir -p build/campaign && cp -r examples/figure1 build/campaign/
	$(HMK) inject build/campaign/figure1/system.toml --faults $(FAULTS) --seed $(SEED) \
		--log build/campaign/campaign.log

asan tsan clang: deps
	cmake --preset $@
	cmake --build --preset $@ -j $(JOBS)
	ctest --preset $@ -j $(JOBS)

SOURCES = $(shell git ls-files --cached --others --exclude-standard '*.cpp' '*.hpp')
format:
	clang-format -i $(SOURCES)
format-check:
	clang-format --dry-run --Werror $(SOURCES)

clean:
	rm -rf build
