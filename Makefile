# Thin wrapper over CMake. Real build logic lives in CMakeLists.txt.
BUILD    ?= build
ASAN_DIR ?= build-asan
TSAN_DIR ?= build-tsan
JOBS     ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_FLAGS ?=
# make install: where to (PREFIX), and a staging root for packagers (DESTDIR).
PREFIX   ?= /usr/local
DESTDIR  ?=

.PHONY: all deps build run test install package asan test-asan test-tsan fuzz bench format clean

all: build

deps:
	@scripts/install-deps

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DMCP_WERROR=ON $(CMAKE_FLAGS)

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

# MCPD_LISTEN (default 127.0.0.1:8080) and MCPD_DB (default var/mcpd.db)
# choose the address and the database: make run MCPD_LISTEN=127.0.0.1:9090
run: build
	@scripts/run-mcpd $(BUILD)/server/mcpd

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# The programs, man pages, units and settings file under PREFIX (mcpd in
# sbin); see packaging/CMakeLists.txt.
install: build
	DESTDIR="$(DESTDIR)" cmake --install $(BUILD) --prefix "$(PREFIX)"

# A .deb in $(BUILD)/ (CPack), installed under /usr: dpkg -i $(BUILD)/mcpd_*.deb
package: build
	cd $(BUILD) && cpack

# The whole suite under AddressSanitizer + UndefinedBehaviorSanitizer.
test-asan: deps
	cmake -S . -B $(ASAN_DIR) -DMCP_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug $(CMAKE_FLAGS)
	cmake --build $(ASAN_DIR) -j $(JOBS)
	cd $(ASAN_DIR) && ctest --output-on-failure -j $(JOBS)

# The whole suite under ThreadSanitizer. The binaries the tests start
# (mcpd, mcplocal) inherit TSAN_OPTIONS: a report makes the program exit 66,
# which fails its test, and lands in the log the test prints. Settings in
# TSAN_OPTIONS from the environment (log_path=..., say) come last and win.
# tests/tsan.supp lists the reports that cannot happen, and why.
TSAN_RUN_OPTIONS = halt_on_error=0 second_deadlock_stack=1 suppressions=$(CURDIR)/tests/tsan.supp
test-tsan: deps
	cmake -S . -B $(TSAN_DIR) -DMCP_TSAN=ON -DCMAKE_BUILD_TYPE=Debug $(CMAKE_FLAGS)
	cmake --build $(TSAN_DIR) -j $(JOBS)
	cd $(TSAN_DIR) && TSAN_OPTIONS="$(TSAN_RUN_OPTIONS) $$TSAN_OPTIONS" \
		ctest --output-on-failure -j $(JOBS)

bench: deps
	@bench/run

# libFuzzer over the parsers of untrusted input (FUZZ_SECONDS each, default
# 60); `make test` replays their corpus.
fuzz: deps
	@fuzz/run

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) $(ASAN_DIR) $(TSAN_DIR) build-fuzz
