/*
 * test_tenantdb: the parts of the tenant store that need no database. The tenants part of
 * the embedded init-db.sql, which the server and the CLI apply to an older database, is found
 * between its markers, holds every table and column the code uses, and only idempotent
 * statements; the messages for an unknown and a taken name are the CLI's and the API's.
 * (The transactions themselves run against PostgreSQL in tests/integration/test_admin.c.)
 */
#include "tenantdb.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static char *schema_text(void)
{
    size_t len = 0;
    const char *s = tenantdb_schema(&len);
    assert_non_null(s);
    char *copy = malloc(len + 1);
    memcpy(copy, s, len);
    copy[len] = '\0';
    return copy;
}

static void the_tenants_schema_is_found_between_its_markers(void **state)
{
    (void)state;
    char *s = schema_text();
    assert_non_null(strstr(s, "CREATE TABLE IF NOT EXISTS tenants ("));
    assert_non_null(strstr(s, "ADD COLUMN IF NOT EXISTS rate_limit"));
    assert_non_null(strstr(s, "CREATE TABLE IF NOT EXISTS tenant_audit ("));
    assert_null(strstr(s, "tenant_data")); /* the seed's table is not part of it */
    assert_null(strstr(s, "-- end: tenants schema"));
    free(s);
}

static void every_statement_of_the_schema_is_idempotent(void **state)
{
    (void)state;
    char *s = schema_text();
    /* Each statement starts at the beginning of a line with a keyword; comments aside, every
     * CREATE or ADD says IF NOT EXISTS, and nothing drops or inserts. */
    for (char *line = strtok(s, "\n"); line; line = strtok(NULL, "\n")) {
        if (!strncmp(line, "CREATE", 6) || strstr(line, "ADD COLUMN"))
            if (!strstr(line, "IF NOT EXISTS"))
                fail_msg("not idempotent: %s", line);
        assert_null(strstr(line, "DROP "));
        assert_null(strstr(line, "INSERT "));
    }
    free(s);
}

static void unknown_and_taken_names_have_one_message(void **state)
{
    (void)state;
    char buf[200];
    tenantdb_strerror(-ENOENT, "acme", buf, sizeof(buf));
    assert_string_equal(buf, "no tenant named \"acme\"");
    tenantdb_strerror(-EEXIST, "acme", buf, sizeof(buf));
    assert_string_equal(buf, "a tenant named \"acme\" already exists");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_tenants_schema_is_found_between_its_markers),
        cmocka_unit_test(every_statement_of_the_schema_is_idempotent),
        cmocka_unit_test(unknown_and_taken_names_have_one_message),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
