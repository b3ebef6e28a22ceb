/*
 * test_deploy: the deployment files agree with the binary (no Docker engine runs here, so what
 * can be checked without one is checked):
 * - .env.example names every variable `bulkhead config` prints, with its default, nothing else,
 *   and is exactly what scripts/env-example.sh generates;
 * - the image's runtime package set (scripts/deps.sh runtime, which the Dockerfile installs)
 *   provides every shared library the binary needs and no load generator; the loadtest set has
 *   load-test.sh's tools;
 * - the Dockerfile uses deps.sh for every stage, strips the binary (and a stripped binary still
 *   runs), labels the image with the OCI keys (its version the Makefile's), runs both images as
 *   a numeric non-root user, checks liveness (/livez: a database outage must not mark the
 *   container unhealthy), and keeps load-test.sh in its own image.
 * docker-compose.yml and deploy/nginx.conf are test_deploy_compose's (fixture: deployfx).
 */
#include "deployfx.h"
#include "dotenv.h"
#include "harness.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

static int vars_find(const struct dpfx_vars *v, const char *name)
{
    for (int i = 0; i < v->n; i++)
        if (!strcmp(v->name[i], name))
            return i;
    return -1;
}

static void collect(const char *name, const char *value, void *ctx)
{
    struct dpfx_vars *v = ctx;
    assert_true(v->n < DPFX_VARS_MAX);
    assert_int_equal(vars_find(v, name), -1); /* each variable once */
    snprintf(v->name[v->n], sizeof(v->name[0]), "%s", name);
    snprintf(v->value[v->n], sizeof(v->value[0]), "%s", value);
    v->n++;
}

static void env_example_names_every_setting_with_its_default(void **state)
{
    (void)state;
    struct dpfx_vars known, listed = {0};
    dpfx_config_vars(&known);
    char *text = dpfx_read_file(".env.example");
    assert_non_null(text);
    char err[200];
    /* The server's own .env parser reads it. */
    assert_int_equal(dotenv_parse(text, strlen(text), collect, &listed, err, sizeof(err)), 0);
    printf("# bulkhead config knows %d variables; .env.example lists %d\n", known.n, listed.n);
    assert_true(known.n >= 20);
    for (int i = 0; i < known.n; i++) {
        int j = vars_find(&listed, known.name[i]);
        if (j < 0)
            fail_msg(".env.example lacks %s", known.name[i]);
        if (strcmp(listed.value[j], known.value[i]))
            fail_msg(".env.example: %s=%s but the default is \"%s\"", known.name[i],
                     listed.value[j], known.value[i]);
        /* Its meaning is the comment line right above it. */
        char needle[80];
        snprintf(needle, sizeof(needle), "\n%s=", known.name[i]);
        const char *at = strstr(text, needle);
        assert_non_null(at);
        const char *prev = at - 1;
        while (prev > text && prev[-1] != '\n')
            prev--;
        assert_true(prev[0] == '#' && at - prev > 10);
    }
    for (int j = 0; j < listed.n; j++)
        if (vars_find(&known, listed.name[j]) < 0)
            fail_msg(".env.example names %s, which the server does not know", listed.name[j]);
    free(text);
}

static void env_example_is_what_the_generator_prints(void **state)
{
    (void)state;
    char cmd[1400];
    snprintf(cmd, sizeof(cmd), "'%s/scripts/env-example.sh' '%s'", dpfx_root(), h_bin());
    char *gen = dpfx_run(cmd);
    char *file = dpfx_read_file(".env.example");
    assert_non_null(gen);
    assert_non_null(file);
    if (strcmp(gen, file))
        fail_msg(".env.example is stale: run scripts/env-example.sh > .env.example");
    free(gen);
    free(file);
}

/* The words of `pkgs_<set>="..."` in scripts/deps.sh (may continue over lines with '\'). */
static void deps_set(const char *set, char *out, size_t len)
{
    char *deps = dpfx_read_file("scripts/deps.sh");
    assert_non_null(deps);
    char key[40];
    snprintf(key, sizeof(key), "\npkgs_%s=\"", set);
    const char *at = strstr(deps, key);
    assert_non_null(at);
    at += strlen(key);
    size_t n = 0;
    for (; *at && *at != '"' && n + 1 < len; at++)
        if (*at != '\\')
            out[n++] = *at == '\n' ? ' ' : *at;
    out[n] = '\0';
    free(deps);
}

static bool has_word(const char *list, const char *word)
{
    size_t wl = strlen(word);
    for (const char *p = list; (p = strstr(p, word)); p += wl)
        if ((p == list || p[-1] == ' ') && (p[wl] == ' ' || p[wl] == '\0'))
            return true;
    return false;
}

static void runtime_packages_provide_every_library_the_binary_needs(void **state)
{
    (void)state;
    char runtime[1000];
    deps_set("runtime", runtime, sizeof(runtime));
    /* ldd resolves each NEEDED library; dpkg says which package ships it. */
    char cmd[1200];
    snprintf(cmd, sizeof(cmd),
             "for lib in $(readelf -d '%s' | sed -n 's/.*NEEDED.*\\[\\(.*\\)\\]/\\1/p'); do "
             "case $lib in libasan*|libubsan*|libtsan*) continue;; esac; "
             "path=$(ldd '%s' | awk -v l=$lib '$1 == l {print $3}'); real=$(readlink -f $path); "
             /* merged /usr: dpkg may know the file under /lib or /usr/lib */
             "pkg=$(for f in $path $real ${real#/usr}; do dpkg -S $f 2>/dev/null && break; done "
             "| cut -d: -f1 | head -1); echo \"$lib $pkg\"; done",
             h_bin(), h_bin());
    char *out = dpfx_run(cmd);
    assert_non_null(out);
    int libs = 0;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        char lib[128], pkg[128] = "";
        assert_true(sscanf(line, "%127s %127s", lib, pkg) >= 1);
        printf("# %s from package %s\n", lib, pkg[0] ? pkg : "(unknown)");
        libs++;
        /* libc6 is in every Debian image; everything else must be in the runtime set. */
        if (strcmp(pkg, "libc6") && !has_word(runtime, pkg))
            fail_msg("%s comes from %s, which scripts/deps.sh runtime does not install", lib,
                     pkg[0] ? pkg : "an unknown package");
    }
    assert_true(libs >= 5);
    free(out);
    /* The health check's curl is there; load generators are not (issue 18). */
    assert_true(has_word(runtime, "curl"));
    assert_false(has_word(runtime, "wrk"));
    assert_false(has_word(runtime, "hey"));
    /* The loadtest set has what load-test.sh checks for (awk is in every Debian image). */
    char loadtest[300];
    deps_set("loadtest", loadtest, sizeof(loadtest));
    char *lt = dpfx_read_file("load-test.sh");
    assert_non_null(lt);
    const char *tools = strstr(lt, "\nfor tool in ");
    assert_non_null(tools);
    char list[200];
    assert_int_equal(sscanf(tools, "\nfor tool in %199[^;]", list), 1);
    for (char *t = strtok(list, " "); t; t = strtok(NULL, " "))
        if (strcmp(t, "awk") && !has_word(loadtest, t))
            fail_msg("load-test.sh needs %s, which scripts/deps.sh loadtest does not install", t);
    free(lt);
}

/* The text of the stage that starts with "\nFROM <from>", up to the next FROM (caller frees). */
static char *stage(const char *df, const char *from)
{
    char key[200];
    snprintf(key, sizeof(key), "\nFROM %s\n", from);
    const char *at = strstr(df, key);
    if (!at)
        return NULL;
    const char *end = strstr(at + 1, "\nFROM ");
    return strndup(at, end ? (size_t)(end - at) : strlen(at));
}

/* The user of the stage's USER line is numeric and not root (0). */
static void assert_numeric_user(const char *st)
{
    const char *user = strstr(st, "\nUSER ");
    assert_non_null(user);
    unsigned uid = 0, gid = 0;
    char rest = 0;
    int n = sscanf(user, "\nUSER %u:%u%c", &uid, &gid, &rest);
    assert_true(n == 3 && rest == '\n');
    assert_true(uid > 0 && gid > 0);
}

static void dockerfile_builds_strips_labels_and_runs_as_a_numeric_user(void **state)
{
    (void)state;
    char *df = dpfx_read_file("Dockerfile");
    assert_non_null(df);
    char *build = stage(df, "debian:bookworm AS build");
    char *lt = stage(df, "debian:bookworm-slim AS loadtest");
    char *runst = stage(df, "debian:bookworm-slim AS runtime");
    assert_non_null(build);
    assert_non_null(lt);
    assert_non_null(runst);
    /* The server image is the last stage: `docker build .` without --target builds it. */
    assert_null(strstr(strstr(df, "\nFROM debian:bookworm-slim AS runtime") + 1, "\nFROM "));

    assert_non_null(strstr(build, "RUN scripts/deps.sh build"));
    assert_non_null(strstr(build, "strip --strip-unneeded build/bulkhead"));
    assert_non_null(strstr(lt, "deps.sh loadtest"));
    assert_non_null(strstr(runst, "deps.sh runtime"));

    /* Only the binary crosses from the build stage; no load test in the server image. */
    assert_non_null(strstr(runst, "COPY --from=build /src/build/bulkhead "));
    assert_null(strstr(runst, "load-test.sh"));
    assert_null(strstr(runst, "--from=loadtest"));
    assert_numeric_user(runst);
    const char *hc = strstr(runst, "\nHEALTHCHECK ");
    assert_non_null(hc);
    const char *hc_end = strstr(hc + 1, "\n\n");
    const char *probe = strstr(hc, "/livez");
    assert_true(probe && (!hc_end || probe < hc_end));
    assert_non_null(strstr(runst, "\nWORKDIR /app"));

    /* OCI labels, with the Makefile's version. */
    static const char *const keys[] = {"title",    "description", "version",
                                       "revision", "created",     "licenses"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        char k[80];
        snprintf(k, sizeof(k), "org.opencontainers.image.%s=", keys[i]);
        if (!strstr(runst, k))
            fail_msg("the runtime stage has no LABEL %s", k);
    }
    char *mk = dpfx_read_file("Makefile");
    assert_non_null(mk);
    char mkv[32] = "", dfv[32] = "";
    assert_int_equal(sscanf(strstr(mk, "\nVERSION := "), "\nVERSION := %31s", mkv), 1);
    assert_int_equal(sscanf(strstr(df, "\nARG VERSION="), "\nARG VERSION=%31s", dfv), 1);
    assert_string_equal(dfv, mkv);
    assert_non_null(strstr(runst, "org.opencontainers.image.licenses=\"MIT\""));
    free(mk);
    /* ... which is the LICENSE file's, and the README says so. */
    char *lic = dpfx_read_file("LICENSE"), *readme = dpfx_read_file("README.md");
    assert_non_null(lic);
    assert_non_null(readme);
    assert_int_equal(strncmp(lic, "MIT License\n", 12), 0);
    assert_non_null(strstr(readme, "\n## License\n"));
    assert_non_null(strstr(readme, "MIT licence ([LICENSE](LICENSE))"));
    free(lic);
    free(readme);

    /* The load test's image: its script and tools, the same numeric user. */
    assert_non_null(strstr(lt, "COPY load-test.sh "));
    assert_non_null(strstr(lt, "load-test.sh\"]"));
    assert_numeric_user(lt);

    /* A stripped binary keeps working and loses its symbol table. */
    char cmd[1400];
    snprintf(cmd, sizeof(cmd),
             "t=$(mktemp) && strip --strip-unneeded -o \"$t\" '%s' && \"$t\" --version && "
             "echo symtab=$(readelf -S \"$t\" | grep -c '\\.symtab') && "
             "echo size=$(stat -c %%s \"$t\") $(stat -c %%s '%s'); rm -f \"$t\"",
             h_bin(), h_bin());
    char *out = dpfx_run(cmd);
    assert_non_null(out);
    assert_non_null(strstr(out, "bulkhead "));
    assert_non_null(strstr(out, "symtab=0\n"));
    long stripped = 0, full = 0;
    assert_int_equal(sscanf(strstr(out, "size="), "size=%ld %ld", &stripped, &full), 2);
    printf("# stripped binary: %ld bytes (unstripped %ld), --version works\n", stripped, full);
    assert_true(stripped < full);
    free(out);
    free(build);
    free(lt);
    free(runst);
    free(df);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(env_example_names_every_setting_with_its_default),
        cmocka_unit_test(env_example_is_what_the_generator_prints),
        cmocka_unit_test(runtime_packages_provide_every_library_the_binary_needs),
        cmocka_unit_test(dockerfile_builds_strips_labels_and_runs_as_a_numeric_user),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
