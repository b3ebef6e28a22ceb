/*
 * test_deploy_compose: the compose file and the balancer's configuration agree with the binary
 * and with each other (no Docker engine runs here; docker-compose resolves the file):
 * - docker-compose.yml has the seed's flow on 8080 and the scale profile's nginx on another port
 *   (its operators' port on loopback only), with the api on Redis and after healthy db/redis;
 *   one image built once (api builds, api-2 never pulls); the balancer's fixed address is what
 *   the instances trust; every setting in a .env next to the compose file reaches both
 *   instances, except the stack's own and the image's;
 * - deploy/nginx.conf re-resolves the replicas through Docker's DNS and refuses /admin,
 *   /metrics and /dashboard on the public listener (test_scaleout runs it).
 * Fixture: deployfx.
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
    char *yaml = dpfx_run(cmd);
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
    char *yaml = compose_config(dpfx_root(), "", "--profile scale --profile loadtest");
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
    yaml = compose_config(dpfx_root(), "SCALE_PORT=8080 API_HOST_PORT=127.0.0.1:8082",
                          "--profile scale");
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
             dir, dir, dpfx_root(), dpfx_root(), dpfx_root(), dir, dpfx_root(), dir);
    char *out = dpfx_run(cmd);
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
    struct dpfx_vars known;
    dpfx_config_vars(&known);
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
    out = dpfx_run(cmd);
    free(out);
}

static void nginx_conf_re_resolves_replicas_and_guards_the_public_port(void **state)
{
    (void)state;
    char *conf = dpfx_read_file("deploy/nginx.conf");
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
        cmocka_unit_test(compose_keeps_the_seed_flow_and_adds_a_scale_profile),
        cmocka_unit_test(compose_passes_every_setting_from_dotenv_to_the_instances),
        cmocka_unit_test(nginx_conf_re_resolves_replicas_and_guards_the_public_port),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
