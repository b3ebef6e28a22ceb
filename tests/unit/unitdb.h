/*
 * unitdb: the unit tests' connection to the shared PostgreSQL cluster that scripts/test.sh
 * starts (BH_TEST_PG_PORT): the "bulkhead" database's URL, and an observer connection the test
 * owns. Without the cluster (a unit test binary run by hand) the database tests skip.
 */
#ifndef BULKHEAD_TESTS_UNITDB_H
#define BULKHEAD_TESTS_UNITDB_H

#include <libpq-fe.h>
#include <stddef.h>

/* The URL into url and an open connection into *admin: 0. No cluster: 0 with *admin NULL (the
 * tests skip). A cluster that cannot be reached: -1 (said on stderr). */
int unitdb_open(char *url, size_t urllen, PGconn **admin);
/* Closes *admin if open; 0 (a cmocka teardown's answer). */
int unitdb_close(PGconn **admin);

/* In a cmocka test: skip it when there is no cluster (admin is the connection unitdb_open set). */
#define UNITDB_NEED(admin)                                                                         \
    do {                                                                                           \
        if (!(admin)) {                                                                            \
            print_message("BH_TEST_PG_PORT is not set: no PostgreSQL to test against\n");          \
            skip();                                                                                \
        }                                                                                          \
    } while (0)

#endif
