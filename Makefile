# Top-level entry points. Every target installs its dependencies first (idempotent).
BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc)

.PHONY: all deps build asan test unit demo bench format clean

all: build

deps:
	@bash scripts/deps.sh

build: deps
	cmake -S . -B $(BUILD) -G Ninja
	cmake --build $(BUILD) -j $(JOBS)

asan: deps
	cmake -S . -B $(ASAN_BUILD) -G Ninja -DTCPHA_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
	cmake --build $(ASAN_BUILD) -j $(JOBS)

# All tests: unit + BPF + end-to-end (netns) in the normal build, then the unit and
# BPF tests again under ASan+UBSan.
test: build asan
	cd $(BUILD) && ctest --output-on-failure --timeout 900
	cd $(ASAN_BUILD) && ctest --output-on-failure -L 'unit|bpf'

unit: build
	cd $(BUILD) && ctest --output-on-failure -L unit

demo: build
	bash scripts/demo.sh $(BUILD)/tcpha

bench: build
	bash bench/run.sh $(BUILD)/tcpha

format:
	clang-format -i $$(git ls-files '*.cpp' '*.hpp' '*.h' '*.c')

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
