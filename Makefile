# bulkhead: build, run, test, benchmark.
#
#   make            build build/bulkhead (installing missing build packages first)
#   make run        start a private PostgreSQL in .run/ and serve on API_PORT (default 8080);
#                   with DATABASE_URL set, use that database instead
#   make test       every test (unit, integration, sanitizers, fuzz smoke); ends "N passed, N failed"
#   make check      the release pass of make test alone (unit and integration): the edit-test loop
#   make bench      the benchmark suite; writes bench/results/
#   make fuzz       run every fuzz target for FUZZ_SECONDS (default 60) each (make fuzz-build:
#                   build them only)
#   make soak       mixed load with faults for SOAK_SECONDS (default 600); leaks and errors
#   make format     clang-format every C file
#
# Variables: BUILD (output dir), SAN (address,undefined | thread), CC.

VERSION := 0.1.0
BUILD ?= build
SAN ?=
CC ?= cc
ROOT := $(CURDIR)

PKGS := libpq jansson hiredis libcrypto libsodium
# libhttp-parser (Debian's libhttp-parser-dev) ships no pkg-config file.
HTTP_PARSER_LIBS := -lhttp_parser
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS = $(shell pkg-config --libs $(PKGS) 2>/dev/null)

WARN := -Wall -Wextra -Wshadow -Wconversion -Wno-sign-conversion -Wstrict-prototypes \
        -Wmissing-prototypes -Wformat=2 -Wundef -Werror
OPT ?= -O2
# src/ is in folders by layer (README, "Source tree"; scripts/layers.sh keeps includes running
# down). Every folder is on the include path and a module's name is unique across folders, so
# includes name the header alone and objects are build/obj/<module>.o.
SRC_DIRS := src $(patsubst %/,%,$(sort $(dir $(wildcard src/*/*.c src/*/*.h))))
SRC_INC := $(addprefix -I,$(SRC_DIRS))
vpath %.c $(SRC_DIRS)
CFLAGS_ALL = -std=c11 -D_GNU_SOURCE -g $(OPT) $(WARN) $(SRC_INC) -pthread -MMD -MP \
             -DBULKHEAD_VERSION='"$(VERSION)"' -DASSET_ROOT='"$(ROOT)"' $(PKG_CFLAGS) $(EXTRA_CFLAGS)
ifneq ($(SAN),)
CFLAGS_ALL += -fsanitize=$(SAN) -fno-omit-frame-pointer
LDSAN = -fsanitize=$(SAN)
endif
LDLIBS_ALL = $(PKG_LIBS) $(HTTP_PARSER_LIBS) -pthread -lm $(LDSAN)
# The bench's bare responders (bench/minimal.c, bench/evloop.c) are libmicrohttpd's.
MHD_LIBS = $(shell pkg-config --libs libmicrohttpd 2>/dev/null)

SRCS := $(wildcard src/*.c src/*/*.c)
LIB_SRCS := $(filter-out src/main.c,$(SRCS))
OBJS := $(patsubst %.c,$(BUILD)/obj/%.o,$(notdir $(SRCS)))
LIB_OBJS := $(patsubst %.c,$(BUILD)/obj/%.o,$(notdir $(LIB_SRCS)))

UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(patsubst tests/unit/%.c,$(BUILD)/tests/unit/%,$(UNIT_SRCS))
INTEG_SRCS := $(wildcard tests/integration/test_*.c)
INTEG_BINS := $(patsubst tests/integration/%.c,$(BUILD)/tests/integration/%,$(INTEG_SRCS))
# Test support: every tests/*.c, and every tests/unit/*.c and tests/integration/*.c that is not
# a test, compiled once per build dir. Unit tests link the tests/*.c ones (redisproc) and their
# own (fakeset); integration tests and the soak link tests/*.c and tests/integration/*.c
# (harness, faultkit, redisproc).
UNIT_SUPPORT_SRCS := $(wildcard tests/*.c) $(filter-out tests/unit/test_%.c,$(wildcard tests/unit/*.c))
TEST_SUPPORT_SRCS := $(wildcard tests/*.c) \
                     $(filter-out tests/integration/test_%.c,$(wildcard tests/integration/*.c))
UNIT_SUPPORT_OBJS := $(patsubst %.c,$(BUILD)/tests/support/%.o,$(notdir $(UNIT_SUPPORT_SRCS)))
TEST_SUPPORT_OBJS := $(patsubst %.c,$(BUILD)/tests/support/%.o,$(notdir $(TEST_SUPPORT_SRCS)))
TEST_LIBS = $(shell pkg-config --libs cmocka libcurl 2>/dev/null)

.PHONY: all deps run test check test-build bench fuzz fuzz-build soak format format-check clean
all: deps
	@$(MAKE) --no-print-directory $(BUILD)/bulkhead

deps:
	@scripts/deps.sh build

$(BUILD)/bulkhead: $(OBJS)
	@echo "  LINK    $@"
	@$(CC) -o $@ $(OBJS) $(LDLIBS_ALL)

# $(call src_of,module): its source in whichever folder holds it (vpath finds it as a
# prerequisite; the recipe names it this way, since a .d file from before src/ had folders lists
# the old flat path first). That old path is gone, which is no reason to stop: src/%.c: ;.
src_of = $(filter %/$(1).c,$(SRCS))
src/%.c: ;

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC      $(call src_of,$*)"
	@$(CC) $(CFLAGS_ALL) -c -o $@ $(call src_of,$*)

# The embedded files are not seen by -MMD (every file of web/ is the dashboard's: a new one also
# needs its ASSETS_EMBED line in assets.c and its row in api.c's table).
$(BUILD)/obj/assets.o: config/tiers.json $(wildcard web/*) init-db.sql

$(BUILD)/tests/support/%.o: tests/%.c
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	@$(CC) $(CFLAGS_ALL) -c -o $@ $<

$(BUILD)/tests/support/%.o: tests/unit/%.c
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	@$(CC) $(CFLAGS_ALL) -c -o $@ $<

$(BUILD)/tests/support/%.o: tests/integration/%.c
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	@$(CC) $(CFLAGS_ALL) -c -o $@ $<

$(BUILD)/tests/unit/%: tests/unit/%.c $(UNIT_SUPPORT_OBJS) $(LIB_OBJS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -o $@ $< $(UNIT_SUPPORT_OBJS) $(LIB_OBJS) $(LDLIBS_ALL) $(TEST_LIBS)

$(BUILD)/tests/integration/%: tests/integration/%.c $(TEST_SUPPORT_OBJS) $(LIB_OBJS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -Itests/integration -o $@ $< $(TEST_SUPPORT_OBJS) $(LIB_OBJS) \
	    $(LDLIBS_ALL) $(TEST_LIBS)

test-build: $(BUILD)/bulkhead $(UNIT_BINS) $(INTEG_BINS)

# The benchmark's yardstick: a bare libmicrohttpd responder of the same shape.
$(BUILD)/bench/minimal: bench/minimal.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -Wno-missing-prototypes -o $@ $< $(LDLIBS_ALL) $(MHD_LIBS)

# Issue 17's probe: the /api/data path driven from event loops (bench/evloop.sh measures it).
$(BUILD)/bench/evloop: bench/evloop.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -o $@ $< $(LDLIBS_ALL) $(MHD_LIBS)

# Issue 32's connection-holding client and the h2o column (bench/conns.sh measures them).
# h2o-minimal is built only when libh2o-evloop-dev is there (scripts/deps.sh's bench set).
$(BUILD)/bench/idleconns: bench/idleconns.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -o $@ $<
$(BUILD)/bench/h2o-minimal: bench/h2o-minimal.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $$(pkg-config --cflags libh2o-evloop) -o $@ $< \
	    $$(pkg-config --libs libh2o-evloop) -lssl -lcrypto $(LDLIBS_ALL)
BENCH_H2O := $(if $(shell pkg-config --exists libh2o-evloop 2>/dev/null && echo y),$(BUILD)/bench/h2o-minimal)

run: 
	@scripts/deps.sh build run
	@$(MAKE) --no-print-directory $(BUILD)/bulkhead
	@scripts/run.sh

test:
	@scripts/deps.sh build test
	@scripts/test.sh

check:
	@scripts/deps.sh build test
	@BH_PASSES=release scripts/test.sh

bench:
	@scripts/deps.sh build bench
	@$(MAKE) --no-print-directory $(BUILD)/bulkhead $(BUILD)/bench/minimal $(BUILD)/bench/evloop \
	    $(BUILD)/bench/idleconns $(BENCH_H2O)
	@bench/run.sh

fuzz:
	@scripts/deps.sh build test
	@scripts/fuzz.sh $${FUZZ_SECONDS:-60}

# Fuzz targets (libFuzzer with AddressSanitizer and UBSan, built by clang into build/fuzz/):
# each links its own source and the src/ modules listed in FUZZ_NEEDS_<target>, compiled with
# the same warnings as everything else (less the ones only gcc knows). scripts/fuzz.sh runs them.
FUZZ_CC ?= clang
FUZZ_TARGETS := $(patsubst tests/fuzz/%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_NEEDS_fuzz_params := params
FUZZ_NEEDS_fuzz_dotenv := dotenv fileio xalloc
FUZZ_NEEDS_fuzz_tiers := tiers share assets fileio xalloc
FUZZ_NEEDS_fuzz_payload := params
FUZZ_NEEDS_fuzz_redisurl := rlredis log logwriter xalloc
FUZZ_NEEDS_fuzz_logescape := log logwriter xalloc
FUZZ_NEEDS_fuzz_proxies := params
FUZZ_NEEDS_fuzz_tenantreq := tenantreq tiers share params assets fileio xalloc
FUZZ_NEEDS_fuzz_h1 := h1 xalloc
FUZZ_WARN := $(filter-out -Wlogical-op -Wduplicated-% -Wjump-misses-init -Wformat-signedness \
               -Wstringop-% -Wformat-overflow% -Wformat-truncation% -Wrestrict \
               -Wnull-dereference=%,$(WARN))
FUZZ_CFLAGS = -std=c11 -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer -fno-sanitize-recover=all \
              $(FUZZ_WARN) -pthread -DASSET_ROOT='"$(ROOT)"' $(SRC_INC) -Itests/fuzz \
              $(shell pkg-config --cflags jansson hiredis 2>/dev/null)
FUZZ_LIBS = $(shell pkg-config --libs jansson hiredis 2>/dev/null) $(HTTP_PARSER_LIBS) -pthread

fuzz-build: $(addprefix build/fuzz/,$(FUZZ_TARGETS))

build/fuzz/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  FUZZCC  $(call src_of,$*)"
	@$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link,address,undefined -MMD -MP -c -o $@ \
	    $(call src_of,$*)

build/fuzz/obj/assets.o: config/tiers.json $(wildcard web/*) init-db.sql

.SECONDEXPANSION:
build/fuzz/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz.h \
                   $$(addprefix build/fuzz/obj/,$$(addsuffix .o,$$(FUZZ_NEEDS_fuzz_$$*)))
	@if [ -z "$(FUZZ_NEEDS_fuzz_$*)" ]; then \
	    echo "tests/fuzz/fuzz_$*.c: list the src/ modules it needs in FUZZ_NEEDS_fuzz_$*"; exit 1; fi
	@echo "  FUZZLD  $@"
	@$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer,address,undefined -o $@ $< \
	    $(filter %.o,$^) $(FUZZ_LIBS)

$(BUILD)/tests/soak/soak: tests/soak/soak.c $(TEST_SUPPORT_OBJS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -Itests/integration -o $@ $< $(TEST_SUPPORT_OBJS) $(LDLIBS_ALL) \
	    $(TEST_LIBS)

soak:
	@scripts/deps.sh build test
	@$(MAKE) --no-print-directory $(BUILD)/bulkhead $(BUILD)/tests/soak/soak
	@BUILD=$(BUILD) scripts/soak.sh

format:
	clang-format -i src/*.c src/*.h src/*/*.c src/*/*.h tests/*.c tests/*.h tests/*/*.c tests/*/*.h bench/*.c

format-check:
	clang-format --dry-run --Werror src/*.c src/*.h src/*/*.c src/*/*.h tests/*.c tests/*.h tests/*/*.c tests/*/*.h bench/*.c

clean:
	rm -rf build

-include $(wildcard $(BUILD)/obj/*.d $(BUILD)/tests/*/*.d build/fuzz/obj/*.d)
