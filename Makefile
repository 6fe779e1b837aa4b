# ngx_byok_module — entry points: build (default), run, stop, test, bench,
# test-asan, lint, docker. See README.md.
SHELL      := /bin/bash
ROOT       := $(abspath .)
BUILD_DIR  ?= $(ROOT)/build
BYOK_CFLAGS ?=
CXX        ?= g++
CXXFLAGS   := -std=c++17 -O2 -g -fPIC -fvisibility=hidden -Wall -Wextra -Werror \
              -Wshadow -Wno-unused-parameter -I$(ROOT) $(BYOK_CFLAGS)
LIB_SRCS   := $(sort $(wildcard lib/*.cpp))
LIB_OBJS   := $(patsubst lib/%.cpp,$(BUILD_DIR)/lib/%.o,$(LIB_SRCS))
LIB_A      := $(BUILD_DIR)/lib/libbyok.a
LIB_LIBS   := -lyaml-cpp -lssl -lcrypto -lstdc++
UNIT_SRCS  := $(sort $(wildcard tests/unit/test_*.cpp))
UNIT_BIN   := $(BUILD_DIR)/unit-tests
MODULE     := $(BUILD_DIR)/ngx_http_byok_module.so
PYTEST     := /usr/bin/python3 -m pytest

.PHONY: build lib unit deps test test-deps run stop bench test-asan lint docker clean

build: deps
	scripts/build.sh

lib: $(LIB_A)

$(BUILD_DIR)/lib/%.o: lib/%.cpp $(wildcard lib/*.h)
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -c $< -o $@

$(LIB_A): $(LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(UNIT_BIN): $(UNIT_SRCS) $(LIB_A)
	$(CXX) $(CXXFLAGS) -I$(ROOT) $(UNIT_SRCS) $(LIB_A) $(LIB_LIBS) -lcriterion -o $@

unit: $(UNIT_BIN)
	$(UNIT_BIN) --jobs 2

deps:
	@scripts/deps.sh build

test-deps:
	@scripts/deps.sh test

test: test-deps build unit
	$(PYTEST) -q tests/integration

run: deps build
	@scripts/run.sh start

stop:
	@scripts/run.sh stop

bench: deps build
	@scripts/deps.sh bench
	@scripts/bench.sh

test-asan: test-deps
	$(MAKE) BUILD_DIR=$(ROOT)/build-asan CXX=clang++-14 \
	    BYOK_CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer" unit
	BUILD_DIR=$(ROOT)/build-asan BYOK_CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer" \
	    scripts/build.sh
	BYOK_MODULE=$(ROOT)/build-asan/ngx_http_byok_module.so \
	    LD_PRELOAD=$$(gcc -print-file-name=libasan.so) $(PYTEST) -q tests/integration

lint:
	clang-format --dry-run --Werror lib/*.cpp lib/*.h ngx_byok_module/*.cpp ngx_byok_module/*.h
	cppcheck --quiet --error-exitcode=1 --std=c++17 --enable=warning,performance lib

docker:
	scripts/docker.sh

clean:
	rm -rf $(BUILD_DIR) build-asan
