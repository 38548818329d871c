# Top-level entry points. Every target installs its dependencies first (idempotent).
BUILD         ?= build
RELEASE_BUILD ?= build-release
ASAN_BUILD    ?= build-asan
JOBS          ?= $(shell nproc)
# Warnings are errors here (development and CI), not in a plain cmake build.
WERROR        ?= -DTCPHA_WERROR=ON

.PHONY: all deps build release asan test unit demo bench format clean

all: build

deps:
	@bash scripts/deps.sh

build: deps
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo $(WERROR)
	cmake --build $(BUILD) -j $(JOBS)

# What users and packagers build (-O3, NDEBUG): it must compile warning-free and pass
# the unit, kernel and BPF tests too.
release: deps
	cmake -S . -B $(RELEASE_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release $(WERROR)
	cmake --build $(RELEASE_BUILD) -j $(JOBS)

asan: deps
	cmake -S . -B $(ASAN_BUILD) -G Ninja -DTCPHA_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug $(WERROR)
	cmake --build $(ASAN_BUILD) -j $(JOBS)

# All tests: unit + kernel + BPF + end-to-end (netns) + fuzzing in the normal build
# (RelWithDebInfo; independent netns beds two at a time), then the unit, kernel and BPF
# tests in the Release build and under ASan+UBSan. Kernel, BPF and netns tests need
# root; without it ctest lists them as skipped.
test: build release asan
	cd $(BUILD) && ctest --output-on-failure --timeout 900 -j 2
	cd $(RELEASE_BUILD) && ctest --output-on-failure -L 'unit|kernel|bpf' -j $(JOBS)
	cd $(ASAN_BUILD) && ctest --output-on-failure -L 'unit|kernel|bpf'

unit: build
	cd $(BUILD) && ctest --output-on-failure -L unit -j $(JOBS)

demo: build
	bash scripts/demo.sh $(BUILD)/tcpha

# Every system takes turns per workload, 3 rounds (~30 min); QUICK=1: 2 short rounds
# (a few minutes). BENCH_PROFILE=0 skips the perf profiles; bench/run.sh lists the rest.
bench: build
	bash bench/run.sh $(BUILD)/tcpha

format:
	clang-format -i $$(git ls-files '*.cpp' '*.hpp' '*.h' '*.c')

clean:
	rm -rf $(BUILD) $(RELEASE_BUILD) $(ASAN_BUILD)
