/*
 * unitdb: the unit tests' connection to the shared PostgreSQL cluster (see unitdb.h).
 */
#include "unitdb.h"

#include <stdio.h>
#include <stdlib.h>

int unitdb_open(char *url, size_t urllen, PGconn **admin)
{
    *admin = NULL;
    const char *port = getenv("BH_TEST_PG_PORT");
    if (!port || !*port)
        return 0;
    snprintf(url, urllen, "postgresql://postgres@127.0.0.1:%s/bulkhead", port);
    *admin = PQconnectdb(url);
    if (PQstatus(*admin) != CONNECTION_OK) {
        fprintf(stderr, "cannot reach PostgreSQL at %s: %s", url, PQerrorMessage(*admin));
        return -1;
    }
    return 0;
}

int unitdb_close(PGconn **admin)
{
    if (*admin)
        PQfinish(*admin);
    *admin = NULL;
    return 0;
}
