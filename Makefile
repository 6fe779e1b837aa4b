# ngx_byok_module — entry points: build (default), run, stop, status, test, bench,
# test-asan, valgrind, fuzz, fuzz-smoke, mutation, lint, docker. See README.md.
SHELL      := /bin/bash
ROOT       := $(abspath .)
BUILD_DIR  ?= $(ROOT)/build
BYOK_CFLAGS ?=
CXX        ?= g++
CXXFLAGS   := -std=c++17 -O2 -g -fPIC -fvisibility=hidden -Wall -Wextra -Werror \
              -Wshadow -Wno-unused-parameter -I$(ROOT) $(BYOK_CFLAGS)
LIB_SRCS   := $(sort $(wildcard lib/*.cpp))
# lib/ plus the built-in catalog: conf/providers.yaml embedded as a generated
# .cpp (scripts/embed_catalog.py) and parsed like an operator's catalog.
LIB_OBJS   := $(patsubst lib/%.cpp,$(BUILD_DIR)/lib/%.o,$(LIB_SRCS)) $(BUILD_DIR)/gen/builtin_catalog.o
LIB_A      := $(BUILD_DIR)/lib/libbyok.a
LIB_LIBS   := -lyaml-cpp -lssl -lcrypto -lstdc++
UNIT_SRCS  := $(sort $(wildcard tests/unit/test_*.cpp))
UNIT_BIN   := $(BUILD_DIR)/unit-tests
MODULE     := $(BUILD_DIR)/ngx_http_byok_module.so
PYTEST     := /usr/bin/python3 -m pytest

.PHONY: FORCE build lib unit deps test test-deps run stop status bench test-asan valgrind fuzz fuzz-build \
        fuzz-smoke mutation lint docker clean

build: deps
	scripts/build.sh

lib: $(LIB_A)

$(BUILD_DIR)/lib/%.o: lib/%.cpp $(wildcard lib/*.h)
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -c $< -o $@

$(BUILD_DIR)/gen/builtin_catalog.o: $(BUILD_DIR)/gen/builtin_catalog.cpp
	$(CXX) $(CXXFLAGS) -c $< -o $@

# Always run; the script rewrites the file only when the YAML changed.
%/gen/builtin_catalog.cpp: FORCE
	@python3 scripts/embed_catalog.py conf/providers.yaml $@

FORCE:

$(LIB_A): $(LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(UNIT_BIN): $(UNIT_SRCS) $(wildcard tests/unit/*.h) $(LIB_A)
	$(CXX) $(CXXFLAGS) -I$(ROOT) $(UNIT_SRCS) $(LIB_A) $(LIB_LIBS) -lcriterion -o $@

unit: $(UNIT_BIN)
	$(UNIT_BIN) --jobs 2

deps:
	@scripts/deps.sh build

test-deps:
	@scripts/deps.sh test
	@scripts/node_deps.sh tests/sdk

test: test-deps build unit
	$(PYTEST) -q tests/integration

run: deps build
	@scripts/run.sh start

stop:
	@scripts/run.sh stop

status:
	@scripts/run.sh status

bench: deps build
	@scripts/deps.sh bench
	@scripts/bench.sh

# ASan+UBSan: lib/ and the glue are built with g++ (nginx's own build uses
# gcc, so one sanitizer runtime); the system nginx is not instrumented, so
# the harness preloads gcc's runtimes into every nginx it starts
# (BYOK_NGINX_ENV) and fails a test when an asan.* / ubsan.* report appears.
ASAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer
ASAN_RT    := $(shell gcc -print-file-name=libasan.so) $(shell gcc -print-file-name=libubsan.so)
ASAN_ENV   := LD_PRELOAD='$(ASAN_RT)' \
              ASAN_OPTIONS=detect_leaks=0:abort_on_error=0:halt_on_error=0 \
              UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=0

test-asan: test-deps
	$(MAKE) BUILD_DIR=$(ROOT)/build-asan CXX=g++ BYOK_CFLAGS="$(ASAN_FLAGS)" unit
	BUILD_DIR=$(ROOT)/build-asan BYOK_CFLAGS="$(ASAN_FLAGS)" scripts/build.sh
	BYOK_MODULE=$(ROOT)/build-asan/ngx_http_byok_module.so \
	    BYOK_NGINX_ENV="$(ASAN_ENV)" $(PYTEST) -q tests/integration $(PYTEST_ARGS)

# Valgrind memcheck of the unit tests (Criterion forks one worker per test;
# --trace-children follows them). Zero definite leaks, zero errors;
# tests/unit/valgrind.supp hides only Criterion's own runner allocations.
valgrind: $(UNIT_BIN)
	valgrind --quiet --trace-children=yes --leak-check=full \
	    --errors-for-leak-kinds=definite --error-exitcode=1 \
	    --suppressions=tests/unit/valgrind.supp \
	    $(UNIT_BIN) --jobs 1

# libFuzzer targets (fuzz/*.cpp) linked with lib/ compiled again with the
# fuzzer flags into build-fuzz/ (never build/lib). `make fuzz` runs each for
# FUZZ_SECONDS; `make fuzz-smoke` for 5 s each (CI). Crashes land in
# build-fuzz/crashes/<target>/; keep them as fuzz/regressions/<target>/.
FUZZ_DIR     := $(ROOT)/build-fuzz
FUZZ_CXX     := clang++-14
FUZZ_FLAGS   := -std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined \
                -fno-sanitize-recover=undefined -fno-omit-frame-pointer -I$(ROOT)
FUZZ_TARGETS := $(patsubst fuzz/%.cpp,%,$(sort $(wildcard fuzz/fuzz_*.cpp)))
FUZZ_BINS    := $(addprefix $(FUZZ_DIR)/,$(FUZZ_TARGETS))
FUZZ_LIB_OBJS := $(patsubst lib/%.cpp,$(FUZZ_DIR)/lib/%.o,$(LIB_SRCS)) \
                 $(FUZZ_DIR)/gen/builtin_catalog.o
FUZZ_SECONDS ?= 60

$(FUZZ_DIR)/lib/%.o: lib/%.cpp $(wildcard lib/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CXX) -std=c++17 -O1 -g -fsanitize=fuzzer-no-link,address,undefined \
	    -fno-sanitize-recover=undefined -fno-omit-frame-pointer -I$(ROOT) -c $< -o $@

$(FUZZ_DIR)/gen/builtin_catalog.o: $(FUZZ_DIR)/gen/builtin_catalog.cpp
	$(FUZZ_CXX) -std=c++17 -O1 -g -fsanitize=fuzzer-no-link,address,undefined \
	    -fno-sanitize-recover=undefined -fno-omit-frame-pointer -I$(ROOT) -c $< -o $@

$(FUZZ_DIR)/fuzz_%: fuzz/fuzz_%.cpp $(wildcard fuzz/*.h) $(FUZZ_LIB_OBJS)
	$(FUZZ_CXX) $(FUZZ_FLAGS) $< $(FUZZ_LIB_OBJS) $(LIB_LIBS) -o $@

# Keep the instrumented lib objects between runs (make would otherwise
# treat them as intermediates of the pattern rule and delete them).
.SECONDARY: $(FUZZ_LIB_OBJS) $(FUZZ_DIR)/gen/builtin_catalog.cpp $(BUILD_DIR)/gen/builtin_catalog.cpp

fuzz-build: $(FUZZ_BINS)

fuzz: fuzz-build
	@scripts/fuzz.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)

fuzz-smoke: fuzz-build
	@scripts/fuzz.sh 5 $(FUZZ_TARGETS)

# Mutation testing (tests/mutation/mutants.yaml): each one-line mutant is
# applied to a copy of the tree in build-mutation/ (never the working tree),
# built, and run against the tests it names; fails if one survives.
# `make mutation ONLY=id,id` runs a subset.
mutation: deps test-deps
	/usr/bin/python3 scripts/mutation.py $(if $(ONLY),--only $(ONLY))

lint:
	clang-format --dry-run --Werror lib/*.cpp lib/*.h ngx_byok_module/*.cpp ngx_byok_module/*.h
	cppcheck --quiet --error-exitcode=1 --std=c++17 --enable=warning,performance lib

docker:
	scripts/docker.sh

clean:
	rm -rf $(BUILD_DIR) build-asan build-fuzz build-mutation
