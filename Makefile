# pg_dtx — distributed transaction primitives for PostgreSQL (PGXS build)
#
#   make                      build against the pg_config on PATH
#   make PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
#   make install              install into that PostgreSQL
#   ./test.sh                 the whole test suite (see README.md)

EXTENSION = pg_dtx
MODULE_big = pg_dtx
OBJS = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c)))
DATA = $(sort $(wildcard pg_dtx--*.sql))
PGFILEDESC = "pg_dtx - distributed transactions, leases, outbox, isolation lab"

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
libpq_dir := $(shell $(PG_CONFIG) --includedir)

PG_CPPFLAGS = -I$(libpq_dir) -Isrc
PG_CFLAGS = -std=gnu99 -Wall -Wmissing-prototypes -Wpointer-arith -Wendif-labels \
            -Wmissing-format-attribute -Wformat-security
SHLIB_LINK = -lpq -lcurl

# Tests are driven by test/run-tests (it counts every regress, isolation and
# TAP test); the lists live there, not here.
EXTRA_CLEAN = results regression.diffs regression.out tmp_check tmp_check_iso \
              output_iso log

include $(PGXS)
