/*
 * test_deploy: the deployment files agree with the binary and with each other (no Docker
 * engine runs here, so what can be checked without one is checked):
 * - .env.example names every variable `bulkhead config` prints, with its default, nothing else,
 *   and is exactly what scripts/env-example.sh generates;
 * - the image's runtime package set (scripts/deps.sh runtime, which the Dockerfile installs)
 *   provides every shared library the binary needs and no load generator; the loadtest set has
 *   load-test.sh's tools;
 * - the Dockerfile uses deps.sh for every stage, strips the binary (and a stripped binary still
 *   runs), labels the image with the OCI keys (its version the Makefile's), runs both images as
 *   a numeric non-root user, checks liveness (/livez: a database outage must not mark the
 *   container unhealthy), and keeps load-test.sh in its own image;
 * - docker-compose.yml (as docker-compose resolves it) has the seed's flow on 8080 and the
 *   scale profile's nginx on another port (its operators' port on loopback only), with the api
 *   on Redis and after healthy db/redis; one image built once (api builds, api-2 never pulls);
 *   the balancer's fixed address is what the instances trust; every setting in a .env next to
 *   the compose file reaches both instances, except the stack's own and the image's;
 * - deploy/nginx.conf re-resolves the replicas through Docker's DNS and refuses /admin,
 *   /metrics and /dashboard on the public listener (test_scaleout runs it).
 */
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

static const char *root(void)
{
    const char *r = getenv("BH_ROOT");
    return r ? r : ".";
}

/* Whole output of a shell command (caller frees); NULL if it failed. */
static char *run(const char *cmd)
{
    FILE *p = popen(cmd, "r");
    if (!p)
        return NULL;
    size_t len = 0, cap = 4096;
    char *buf = malloc(cap);
    size_t n;
    while ((n = fread(buf + len, 1, cap - len - 1, p)) > 0) {
        len += n;
        if (cap - len < 1024)
            buf = realloc(buf, cap *= 2);
    }
    buf[len] = '\0';
    if (pclose(p) != 0) {
        fprintf(stderr, "test_deploy: \"%s\" failed:\n%s\n", cmd, buf);
        free(buf);
        return NULL;
    }
    return buf;
}

static char *read_file(const char *rel)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/%s", root(), rel);
    return h_read_file(path);
}

#define VARS_MAX 64

struct vars {
    char name[VARS_MAX][64];
    char value[VARS_MAX][256];
    int n;
};

static int vars_find(const struct vars *v, const char *name)
{
    for (int i = 0; i < v->n; i++)
        if (!strcmp(v->name[i], name))
            return i;
    return -1;
}

/* The variables and defaults `bulkhead config` prints (text form, up to the per-tier keys). */
static void config_vars(struct vars *v)
{
    char cmd[700];
    snprintf(cmd, sizeof(cmd), "'%s' config", h_bin());
    char *out = run(cmd);
    assert_non_null(out);
    memset(v, 0, sizeof(*v));
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        if (!strncmp(line, "Per-tier", 8))
            break;
        char name[64];
        if (line[0] == ' ' && line[1] == ' ' && line[2] >= 'A' && line[2] <= 'Z' &&
            sscanf(line, " %63s", name) == 1) {
            assert_true(v->n < VARS_MAX);
            snprintf(v->name[v->n++], sizeof(v->name[0]), "%s", name);
            continue;
        }
        const char *d = strstr(line, "default: ");
        if (d && v->n > 0) {
            d += strlen("default: ");
            const char *end = strstr(d, "; allowed: ");
            assert_non_null(end);
            int len = (int)(end - d);
            snprintf(v->value[v->n - 1], sizeof(v->value[0]), "%.*s", len, d);
            if (!strcmp(v->value[v->n - 1], "(empty)"))
                v->value[v->n - 1][0] = '\0';
        }
    }
    free(out);
}

static void collect(const char *name, const char *value, void *ctx)
{
    struct vars *v = ctx;
    assert_true(v->n < VARS_MAX);
    assert_int_equal(vars_find(v, name), -1); /* each variable once */
    snprintf(v->name[v->n], sizeof(v->name[0]), "%s", name);
    snprintf(v->value[v->n], sizeof(v->value[0]), "%s", value);
    v->n++;
}

static void env_example_names_every_setting_with_its_default(void **state)
{
    (void)state;
    struct vars known, listed = {0};
    config_vars(&known);
    char *text = read_file(".env.example");
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
    snprintf(cmd, sizeof(cmd), "'%s/scripts/env-example.sh' '%s'", root(), h_bin());
    char *gen = run(cmd);
    char *file = read_file(".env.example");
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
    char *deps = read_file("scripts/deps.sh");
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
    char *out = run(cmd);
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
    char *lt = read_file("load-test.sh");
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
    char *df = read_file("Dockerfile");
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
    char *mk = read_file("Makefile");
    assert_non_null(mk);
    char mkv[32] = "", dfv[32] = "";
    assert_int_equal(sscanf(strstr(mk, "\nVERSION := "), "\nVERSION := %31s", mkv), 1);
    assert_int_equal(sscanf(strstr(df, "\nARG VERSION="), "\nARG VERSION=%31s", dfv), 1);
    assert_string_equal(dfv, mkv);
    assert_non_null(strstr(runst, "org.opencontainers.image.licenses=\"MIT\""));
    free(mk);
    /* ... which is the LICENSE file's, and the README says so. */
    char *lic = read_file("LICENSE"), *readme = read_file("README.md");
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
    char *out = run(cmd);
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

/* The block of one service in `docker-compose config` output (caller frees). */
static char *service_block(const char *yaml, const char *name)
{
    char key[80];
    snprintf(key, sizeof(key), "\n  %s:\n", name);
    const char *at = strstr(yaml, key);
    if (!at)
        return NULL;
    at += strlen(key);
    const char *end = at;
    while ((end = strchr(end, '\n')) && end[1] == ' ' && end[2] == ' ' && end[3] == ' ')
        end++;
    size_t len = end ? (size_t)(end - at) : strlen(at);
    char *b = malloc(len + 1);
    memcpy(b, at, len);
    b[len] = '\0';
    return b;
}

/* `docker-compose config` of the tree's compose file with the given environment prefix and
 * profiles (caller frees); fails the test if compose refuses it. */
static char *compose_config(const char *dir, const char *env, const char *profiles)
{
    char cmd[1600];
    snprintf(cmd, sizeof(cmd),
             "cd '%s' && env -u SCALE_PORT -u API_HOST_PORT -u OPS_PORT -u OPS_HOST_PORT "
             "-u BALANCER_IP "
             "-u BALANCER_SUBNET -u BULKHEAD_IMAGE %s docker-compose -f docker-compose.yml %s "
             "config 2>&1",
             dir, env, profiles);
    char *yaml = run(cmd);
    assert_non_null(yaml);
    return yaml;
}

/* The value of "      NAME: value" inside a service block, copied into buf ("" if absent). */
static const char *yaml_value(const char *block, const char *name, char *buf, size_t len)
{
    char key[100];
    snprintf(key, sizeof(key), "\n      %s: ", name);
    const char *at = strstr(block, key);
    buf[0] = '\0';
    if (at) {
        at += strlen(key);
        snprintf(buf, len, "%.*s", (int)strcspn(at, "\n"), at);
        if (!strcmp(buf, "''"))
            buf[0] = '\0';
    }
    return buf;
}

static void compose_keeps_the_seed_flow_and_adds_a_scale_profile(void **state)
{
    (void)state;
    char *yaml = compose_config(root(), "", "--profile scale --profile loadtest");
    char *db = service_block(yaml, "db"), *redis = service_block(yaml, "redis");
    char *api = service_block(yaml, "api"), *api2 = service_block(yaml, "api-2");
    char *nginx = service_block(yaml, "nginx"), *lt = service_block(yaml, "loadtest");
    assert_non_null(db);
    assert_non_null(redis);
    assert_non_null(api);
    assert_non_null(api2);
    assert_non_null(nginx);
    assert_non_null(lt);

    assert_non_null(strstr(db, "image: postgres:15"));
    assert_non_null(strstr(db, "init-db.sql:/docker-entrypoint-initdb.d/"));
    assert_non_null(strstr(db, "healthcheck:"));
    assert_non_null(strstr(redis, "image: redis:7"));
    assert_non_null(strstr(redis, "healthcheck:"));
    /* The seed's flow: `docker compose up --build`, then http://localhost:8080/health. */
    assert_null(strstr(api, "profiles:"));
    assert_non_null(strstr(api, "published: 8080\n      target: 8080"));
    const char *apis[] = {api, api2};
    for (size_t i = 0; i < 2; i++) {
        const char *s = apis[i];
        assert_non_null(strstr(s, "RATE_LIMIT_BACKEND: redis"));
        assert_non_null(strstr(s, "REDIS_URL: redis://redis:6379"));
        assert_non_null(strstr(s, "DATABASE_URL: postgresql://"));
        assert_non_null(strstr(s, "@db:5432/"));
        assert_non_null(strstr(s, "db:\n        condition: service_healthy"));
        assert_non_null(strstr(s, "redis:\n        condition: service_healthy"));
        /* One image: both run bulkhead:local. */
        assert_non_null(strstr(s, "\n    image: bulkhead:local\n"));
    }
    /* ... built once, by api; api-2 neither builds it nor pulls it, and starts after api. */
    assert_true(!strncmp(api, "    build:\n", 11) || strstr(api, "\n    build:\n"));
    assert_null(strstr(api2, "build:"));
    assert_non_null(strstr(api2, "\n    pull_policy: never\n"));
    assert_non_null(strstr(api2, "api:\n        condition: service_started"));
    /* Scale profile: a second api that publishes nothing, nginx on 8081, after both apis. */
    assert_non_null(strstr(api2, "- scale"));
    assert_null(strstr(api2, "published:"));
    assert_non_null(strstr(nginx, "- scale"));
    assert_non_null(strstr(nginx, "published: 8081\n      target: 80"));
    /* The operators' port only on the host's loopback. */
    assert_non_null(strstr(nginx, "- 127.0.0.1:8090:8090/tcp"));
    assert_non_null(strstr(nginx, "deploy/nginx.conf:/etc/nginx/nginx.conf"));
    assert_non_null(strstr(nginx, "deploy/proxy.conf:/etc/nginx/bulkhead-proxy.conf"));
    assert_non_null(strstr(nginx, "api:\n        condition: service_healthy"));
    assert_non_null(strstr(nginx, "api-2:\n        condition: service_healthy"));
    /* `resolve` needs nginx 1.27.3 or later. */
    unsigned major = 0, minor = 0;
    assert_int_equal(sscanf(strstr(nginx, "image: nginx:"), "image: nginx:%u.%u", &major, &minor),
                     2);
    assert_true(major > 1 || (major == 1 && minor >= 28));
    /* The balancer's fixed address is exactly what the instances trust, and it reaches them
     * only over the balancer network. */
    char trusted[2][64], addr[64];
    yaml_value(api, "TRUSTED_PROXIES", trusted[0], sizeof(trusted[0]));
    yaml_value(api2, "TRUSTED_PROXIES", trusted[1], sizeof(trusted[1]));
    const char *ip = strstr(nginx, "ipv4_address: ");
    assert_non_null(ip);
    snprintf(addr, sizeof(addr), "%.*s", (int)strcspn(ip + 14, "\n"), ip + 14);
    assert_string_equal(trusted[0], addr);
    assert_string_equal(trusted[1], addr);
    assert_non_null(strstr(nginx, "networks:\n      balancer:\n"));
    assert_null(strstr(nginx, "default:"));
    for (size_t i = 0; i < 2; i++)
        assert_non_null(strstr(apis[i], "networks:\n      balancer: null\n      default: null"));
    char subnet[64];
    const char *sn = strstr(yaml, "\n      - subnet: ");
    assert_non_null(sn);
    snprintf(subnet, sizeof(subnet), "%.*s", (int)strcspn(sn + 17, "\n"), sn + 17);
    unsigned a[4], b[4], bits;
    assert_int_equal(sscanf(subnet, "%u.%u.%u.%u/%u", &a[0], &a[1], &a[2], &a[3], &bits), 5);
    assert_int_equal(sscanf(addr, "%u.%u.%u.%u", &b[0], &b[1], &b[2], &b[3]), 4);
    assert_int_equal(bits, 24);
    assert_true(a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && b[3] > 1 && b[3] < 255);
    /* The load test runs from its own image against api. */
    assert_non_null(strstr(lt, "target: loadtest"));
    assert_non_null(strstr(lt, "BASE_URL: http://api:8080"));
    assert_non_null(strstr(lt, "- loadtest"));
    printf("# compose: api publishes 8080 and builds bulkhead:local, profile scale adds api-2 "
           "(same image, never pulled) and nginx on 8081 (+ loopback 8090) at %s, trusted by "
           "both\n",
           addr);
    free(db);
    free(redis);
    free(api);
    free(api2);
    free(nginx);
    free(lt);
    free(yaml);

    /* The balancer can take the seed's port: nginx on 8080, api alone on loopback 8082. */
    yaml =
        compose_config(root(), "SCALE_PORT=8080 API_HOST_PORT=127.0.0.1:8082", "--profile scale");
    api = service_block(yaml, "api");
    nginx = service_block(yaml, "nginx");
    assert_non_null(api);
    assert_non_null(nginx);
    assert_non_null(strstr(api, "- 127.0.0.1:8082:8080/tcp"));
    assert_non_null(strstr(nginx, "published: 8080\n      target: 80"));
    printf("# compose: SCALE_PORT=8080 API_HOST_PORT=127.0.0.1:8082 puts nginx on 8080, api on "
           "loopback 8082\n");
    free(api);
    free(nginx);
    free(yaml);
}

static void compose_passes_every_setting_from_dotenv_to_the_instances(void **state)
{
    (void)state;
    /* A scratch project folder: compose reads the .env next to the compose file. */
    char dir[400];
    snprintf(dir, sizeof(dir), "%s/compose-%d",
             getenv("BH_TEST_WORK") ? getenv("BH_TEST_WORK") : "/tmp", (int)getpid());
    char cmd[4000];
    snprintf(cmd, sizeof(cmd),
             "rm -rf '%s' && mkdir -p '%s/deploy' && cp '%s/docker-compose.yml' '%s/init-db.sql' "
             "'%s/Dockerfile' '%s/' && cp -r '%s/deploy/'* '%s/deploy/' && echo ok",
             dir, dir, root(), root(), root(), dir, root(), dir);
    char *out = run(cmd);
    assert_non_null(out);
    free(out);
    /* Without .env every passed-through setting is empty: the server's default. */
    char *yaml = compose_config(dir, "", "--profile scale");
    char *api = service_block(yaml, "api");
    assert_non_null(api);
    char v[300];
    assert_string_equal(yaml_value(api, "LOG_LEVEL", v, sizeof(v)), "");
    free(api);
    free(yaml);

    /* Every setting `bulkhead config` knows, in .env: the stack's own five keep the stack's
     * values, API_BIND and TIERS_FILE stay out, every other one reaches both instances. */
    struct vars known;
    config_vars(&known);
    static const char *const own[] = {"DATABASE_URL", "RATE_LIMIT_BACKEND", "REDIS_URL", "API_PORT",
                                      "TRUSTED_PROXIES"};
    static const char *const kept_out[] = {"API_BIND", "TIERS_FILE"};
    char path[500];
    snprintf(path, sizeof(path), "%s/.env", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (int i = 0; i < known.n; i++)
        fprintf(f, "%s=from-dotenv-%d\n", known.name[i], i);
    fclose(f);
    yaml = compose_config(dir, "", "--profile scale");
    const char *names[] = {"api", "api-2"};
    int passed = 0;
    for (size_t k = 0; k < 2; k++) {
        char *svc = service_block(yaml, names[k]);
        assert_non_null(svc);
        for (int i = 0; i < known.n; i++) {
            char want[64];
            snprintf(want, sizeof(want), "from-dotenv-%d", i);
            yaml_value(svc, known.name[i], v, sizeof(v));
            bool is_own = false, is_out = false;
            for (size_t j = 0; j < sizeof(own) / sizeof(own[0]); j++)
                is_own |= !strcmp(own[j], known.name[i]);
            for (size_t j = 0; j < sizeof(kept_out) / sizeof(kept_out[0]); j++)
                is_out |= !strcmp(kept_out[j], known.name[i]);
            if (is_out) {
                if (v[0])
                    fail_msg("%s: %s is set (%s) but should stay the image's", names[k],
                             known.name[i], v);
            } else if (is_own) {
                if (!v[0] || strstr(v, "from-dotenv"))
                    fail_msg("%s: %s should be the stack's own, is \"%s\"", names[k], known.name[i],
                             v);
            } else {
                if (strcmp(v, want))
                    fail_msg("%s: %s from .env did not reach it (\"%s\")", names[k], known.name[i],
                             v);
                passed++;
            }
        }
        free(svc);
    }
    printf("# compose: %d settings of .env reach each instance; the stack's own 5 are kept\n",
           passed / 2);
    assert_true(passed / 2 >= 15);
    free(yaml);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s' && echo ok", dir);
    out = run(cmd);
    free(out);
}

static void nginx_conf_re_resolves_replicas_and_guards_the_public_port(void **state)
{
    (void)state;
    char *conf = read_file("deploy/nginx.conf");
    assert_non_null(conf);
    /* Docker's DNS, re-asked every few seconds; `resolve` needs the shared zone. */
    assert_non_null(strstr(conf, "\n    resolver 127.0.0.11 valid="));
    const char *up = strstr(conf, "upstream bulkhead {");
    assert_non_null(up);
    const char *up_end = strchr(up, '}');
    assert_non_null(strstr(up, "zone bulkhead "));
    assert_true(strstr(up, "zone bulkhead ") < up_end);
    const char *a = strstr(up, "server api:8080 resolve "),
               *b = strstr(up, "server api-2:8080 resolve ");
    assert_true(a && a < up_end && b && b < up_end);
    /* Two listeners: the public one refuses the operator paths, the other serves them. */
    const char *pub = strstr(conf, "listen 80;"), *ops = strstr(conf, "listen 8090;");
    assert_non_null(pub);
    assert_non_null(ops);
    const char *guard = strstr(pub, "location ~ ^/(admin|metrics|dashboard)(/|$) {");
    assert_non_null(guard);
    assert_true(guard < ops);
    assert_non_null(strstr(guard, "default_type application/json;"));
    assert_non_null(strstr(guard, "return 404 '{\"error\":\"not_found\""));
    assert_null(strstr(ops, "location ~"));
    free(conf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(env_example_names_every_setting_with_its_default),
        cmocka_unit_test(env_example_is_what_the_generator_prints),
        cmocka_unit_test(runtime_packages_provide_every_library_the_binary_needs),
        cmocka_unit_test(dockerfile_builds_strips_labels_and_runs_as_a_numeric_user),
        cmocka_unit_test(compose_keeps_the_seed_flow_and_adds_a_scale_profile),
        cmocka_unit_test(compose_passes_every_setting_from_dotenv_to_the_instances),
        cmocka_unit_test(nginx_conf_re_resolves_replicas_and_guards_the_public_port),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
