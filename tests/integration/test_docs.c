/*
 * test_docs: the README is the truth. Its configuration tables must be exactly what the binary
 * prints (`bulkhead config --markdown`, from the same declarative tables the parser uses), its
 * list of error codes exactly the server's error table (`bulkhead errors --markdown`), and
 * every endpoint the README lists must exist on a running server.
 */
#include "harness.h"

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>

static char *slurp_cmd(const char *cmd)
{
    FILE *p = popen(cmd, "r");
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    size_t n;
    while ((n = fread(buf + len, 1, cap - len - 1, p)) > 0) {
        len += n;
        if (len + 1 >= cap)
            buf = realloc(buf, cap *= 2);
    }
    buf[len] = '\0';
    pclose(p);
    return buf;
}

/* What `bulkhead <args>` prints (malloc'd). */
static char *binary_output(const char *args)
{
    char cmd[800];
    snprintf(cmd, sizeof(cmd), "%s/%s %s", getenv("BH_ROOT"),
             getenv("BULKHEAD_BIN") ? getenv("BULKHEAD_BIN") : "build/bulkhead", args);
    return slurp_cmd(cmd);
}

/* README.md (malloc'd). */
static char *readme_text(void)
{
    char cmd[800];
    snprintf(cmd, sizeof(cmd), "cat %s/README.md", getenv("BH_ROOT"));
    return slurp_cmd(cmd);
}

static void readme_config_tables_match_the_binary(void **state)
{
    (void)state;
    char *tables = binary_output("config --markdown");
    char *readme = readme_text();
    assert_true(strlen(tables) > 1000);
    if (!strstr(readme, tables))
        fprintf(stderr,
                "README.md's configuration tables are stale: run scripts/readme-config.sh\n");
    assert_non_null(strstr(readme, tables));
    /* And the README opens with the two commands. */
    const char *run = strstr(readme, "make run");
    const char *test = strstr(readme, "make test");
    assert_non_null(run);
    assert_non_null(test);
    assert_true(run - readme < 600 && test - readme < 600);
    free(tables);
    free(readme);
}

/* The README's error codes are the table every error reply is made from. */
static void readme_error_codes_match_the_binary(void **state)
{
    (void)state;
    char *table = binary_output("errors --markdown");
    char *readme = readme_text();
    /* Every code the server answers with, the three that were once missing included. */
    const char *codes[] = {"`invalid_tier`", "`auth_unavailable`", "`tier_unavailable`",
                           "`unknown_tier`", "`shutting_down`",    "`timeout`"};
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        assert_non_null(strstr(table, codes[i]));
    if (!strstr(readme, table))
        fprintf(stderr, "README.md's error codes are stale: run scripts/readme-config.sh\n");
    assert_non_null(strstr(readme, table));
    free(table);
    free(readme);
}

/* The README's benchmark block is the latest results file's headline, not a hand-kept copy. */
static void readme_bench_table_is_the_latest_run(void **state)
{
    (void)state;
    char cmd[800];
    snprintf(cmd, sizeof(cmd),
             "awk '/^What the design choices buy/ { exit } NR > 2 { print }' "
             "%s/bench/results/latest.md",
             getenv("BH_ROOT"));
    char *table = slurp_cmd(cmd);
    char *readme = readme_text();
    assert_non_null(strstr(table, "| measurement | bulkhead | reference | ratio | target |"));
    if (!strstr(readme, table))
        fprintf(stderr, "README.md's benchmark table is stale: run scripts/readme-bench.sh\n");
    assert_non_null(strstr(readme, table));
    free(table);
    free(readme);
}

/* The README's shell examples run on the Debian machines it targets: no macOS-only `open`. */
static void readme_commands_are_debian_commands(void **state)
{
    (void)state;
    char cmd[800];
    snprintf(cmd, sizeof(cmd), "cat %s/README.md", getenv("BH_ROOT"));
    char *readme = slurp_cmd(cmd);
    bool in_block = false;
    int lineno = 0;
    for (char *line = readme, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        lineno++;
        if (!strncmp(line, "```", 3)) {
            in_block = !in_block;
            continue;
        }
        if (in_block && !strncmp(line, "open ", 5))
            fail_msg("README.md line %d: `open` is a macOS command (xdg-open, or the URL): %s",
                     lineno, line);
    }
    free(readme);
}

static void every_documented_endpoint_answers(void **state)
{
    (void)state;
    char url[300];
    assert_int_equal(h_db_create("docs", url, sizeof(url)), 0);
    const char *e[] = {"ADMIN_TOKEN=docs-token-0123456789abcdef0123456789", NULL};
    struct h_server s;
    assert_int_equal(h_server_start(&s, url, e), 0);
    struct {
        const char *method, *path;
        long status;
    } eps[] = {
        {"GET", "/health", 200},
        {"GET", "/livez", 200},
        {"GET", "/readyz", 200},
        {"GET", "/api/data", 400},
        {"GET", "/metrics/bulkheads", 200},
        {"GET", "/metrics", 200},
        {"GET", "/dashboard", 200},
        {"GET", "/dashboard/data?since=0", 200},
        {"POST", "/admin/breaker/free/reset", 401},
        {"POST", "/admin/tenants", 401},
        {"GET", "/admin/tenants", 401},
        {"GET", "/admin/tenants/acme", 401},
        {"PATCH", "/admin/tenants/acme", 401},
        {"DELETE", "/admin/tenants/acme", 401},
        {"POST", "/admin/tenants/acme/keys", 401},
        {"GET", "/admin/audit", 401},
    };
    for (size_t i = 0; i < sizeof(eps) / sizeof(eps[0]); i++) {
        char u[400];
        snprintf(u, sizeof(u), "%s%s", s.base, eps[i].path);
        struct h_resp r;
        h_request(eps[i].method, u, NULL, eps[i].method[0] == 'P' ? "" : NULL, &r);
        if (r.status != eps[i].status)
            fprintf(stderr, "%s %s: %ld\n", eps[i].method, eps[i].path, r.status);
        assert_int_equal(r.status, eps[i].status);
        h_resp_free(&r);
    }
    assert_int_equal(h_server_stop(&s, SIGTERM, 20000), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(readme_config_tables_match_the_binary),
        cmocka_unit_test(readme_error_codes_match_the_binary),
        cmocka_unit_test(readme_bench_table_is_the_latest_run),
        cmocka_unit_test(readme_commands_are_debian_commands),
        cmocka_unit_test(every_documented_endpoint_answers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
