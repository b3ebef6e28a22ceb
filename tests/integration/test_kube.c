/*
 * test_kube: deploy/kubernetes/, checked offline (no cluster runs here):
 * - every overlay, the base and the monitoring kustomization render with `kubectl kustomize`
 *   (the kustomize that kubectl embeds);
 * - every rendered object validates against the Kubernetes API schemas of npm's
 *   kubernetes-models (and @kubernetes-models/prometheus-operator for the ServiceMonitor),
 *   unknown fields included; tests/kube/check.mjs does it, from the pinned packages the test
 *   installs into build/kube-check with `npm ci`;
 * - every overlay keeps the project's rules (check.mjs rules): probes on the public port,
 *   preStop pause and a grace period past it plus SHUTDOWN_TIMEOUT_MS, the image's numeric
 *   non-root user, read-only root, no capabilities, RuntimeDefault seccomp, a whole-CPU limit
 *   matching the event threads, OPS_PORT with its Service and a NetworkPolicy that admits it
 *   only from the monitoring namespace, a PDB that lets a drain proceed, an HPA, scrape
 *   settings, and the dev overlay's connection budget within its PostgreSQL;
 * - the settings and tier file each overlay gives are accepted by the server itself
 *   (`bulkhead config --effective` with that environment);
 * - the checks fail on broken manifests (a negative control for each rule family);
 * - the copies kustomize needs inside its folders (tiers.json, init-db.sql) are current.
 */
#include "harness.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

static const char *const kustomizations[] = {
    "deploy/kubernetes/base",
    "deploy/kubernetes/overlays/dev",
    "deploy/kubernetes/overlays/production",
    "deploy/kubernetes/overlays/production-queue-hpa",
    "deploy/kubernetes/monitoring",
};
#define NKUST (sizeof(kustomizations) / sizeof(kustomizations[0]))

/* The overlays a user applies: each has the whole Deployment and must keep every rule. */
static const char *const overlays[] = {"dev", "production", "production-queue-hpa"};
#define NOVERLAYS (sizeof(overlays) / sizeof(overlays[0]))

static char checker[700];   /* build/kube-check/check.mjs */
static char opts_path[600]; /* check.mjs rules' options */

/* The rendering of kustomization i into the work folder. */
static const char *rendered(size_t i)
{
    static char path[NKUST][600];
    if (!path[i][0]) {
        const char *slash = strrchr(kustomizations[i], '/');
        snprintf(path[i], sizeof(path[i]), "%s/kube-%s.yaml", h_work(), slash + 1);
    }
    return path[i];
}

static const char *overlay_rendered(const char *name)
{
    for (size_t i = 0; i < NKUST; i++) {
        const char *slash = strrchr(kustomizations[i], '/');
        if (!strcmp(slash + 1, name))
            return rendered(i);
    }
    return NULL;
}

/* The settings `bulkhead config` knows with their defaults, as a JSON object. */
static json_t *config_defaults(void)
{
    char cmd[700], *out = NULL;
    snprintf(cmd, sizeof(cmd), "'%s' config", h_bin());
    if (h_run(cmd, &out) != 0) {
        free(out);
        return NULL;
    }
    json_t *d = json_object();
    char name[64] = "";
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        if (!strncmp(line, "Per-tier", 8))
            break;
        if (line[0] == ' ' && line[1] == ' ' && line[2] >= 'A' && line[2] <= 'Z') {
            sscanf(line, " %63s", name);
            continue;
        }
        const char *def = strstr(line, "default: "), *end = def ? strstr(def, "; allowed: ") : NULL;
        if (name[0] && def && end) {
            def += strlen("default: ");
            char v[256];
            snprintf(v, sizeof(v), "%.*s", (int)(end - def), def);
            json_object_set_new(d, name, json_string(strcmp(v, "(empty)") ? v : ""));
            name[0] = '\0';
        }
    }
    free(out);
    return d;
}

/* The Dockerfile's numeric runtime user (USER uid:gid of the last stage), or -1. */
static int image_user(void)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/Dockerfile", h_root());
    char *df = h_read_file(path);
    if (!df)
        return -1;
    int uid = -1;
    for (const char *at = df; (at = strstr(at, "\nUSER ")); at++)
        sscanf(at, "\nUSER %d:", &uid);
    free(df);
    return uid;
}

/*
 * Group setup: kubectl present; check.mjs and its pinned packages in build/kube-check (npm ci
 * when the lock file changed or nothing is installed yet); every kustomization rendered; the
 * options of check.mjs rules written.
 */
static int setup(void **state)
{
    (void)state;
    char cmd[4000], *out = NULL;
    if (h_run("command -v kubectl && command -v node && command -v npm", &out) != 0) {
        fprintf(stderr,
                "test_kube: kubectl, node or npm is missing (scripts/deps.sh test "
                "installs them):\n%s\n",
                out);
        free(out);
        return -1;
    }
    free(out);
    char dir[600];
    snprintf(dir, sizeof(dir), "%s/build/kube-check", h_root());
    snprintf(checker, sizeof(checker), "%s/check.mjs", dir);
    snprintf(cmd, sizeof(cmd),
             "set -e; mkdir -p '%s'; cd '%s'; "
             "if ! cmp -s '%s/tests/kube/package-lock.json' package-lock.json || "
             "[ ! -d node_modules ]; then cp '%s/tests/kube/package.json' "
             "'%s/tests/kube/package-lock.json' .; npm ci --no-audit --no-fund --loglevel=error; "
             "fi; cp '%s/tests/kube/check.mjs' .",
             dir, dir, h_root(), h_root(), h_root(), h_root());
    if (h_run(cmd, &out) != 0) {
        fprintf(stderr, "test_kube: could not install the schema checker into %s:\n%s\n", dir, out);
        free(out);
        return -1;
    }
    free(out);

    json_t *opts = json_object();
    json_t *defaults = config_defaults();
    char tiers[600];
    snprintf(tiers, sizeof(tiers), "%s/config/tiers.json", h_root());
    json_t *builtin = json_load_file(tiers, 0, NULL);
    if (!defaults || !builtin || image_user() <= 0) {
        fprintf(stderr, "test_kube: cannot read `bulkhead config`, config/tiers.json or the "
                        "Dockerfile's USER\n");
        return -1;
    }
    json_object_set_new(opts, "defaults", defaults);
    json_object_set_new(opts, "builtinTiers", builtin);
    json_object_set_new(opts, "imageUser", json_integer(image_user()));
    /* The production overlays name a Secret the operator creates (its README lines). */
    json_object_set_new(opts, "externalSecrets", json_pack("[s]", "bulkhead-secrets"));
    snprintf(opts_path, sizeof(opts_path), "%s/kube-check-opts.json", h_work());
    int rc = json_dump_file(opts, opts_path, 0);
    json_decref(opts);
    return rc;
}

/* A rendering, done once per run (the first test does it). */
static int render(size_t i, char **err)
{
    char cmd[1400];
    snprintf(cmd, sizeof(cmd), "cd '%s' && kubectl kustomize '%s' 2>'%s.err' >'%s'", h_root(),
             kustomizations[i], rendered(i), rendered(i));
    int rc = h_run(cmd, NULL);
    if (rc && err) {
        char path[700];
        snprintf(path, sizeof(path), "%s.err", rendered(i));
        *err = h_read_file(path);
    }
    return rc;
}

static void every_kustomization_renders_with_kubectl(void **state)
{
    (void)state;
    char *out = NULL;
    h_run("kubectl version --client 2>&1 | tr '\\n' ' '", &out);
    printf("# %s\n", out);
    free(out);
    for (size_t i = 0; i < NKUST; i++) {
        char *err = NULL;
        if (render(i, &err) != 0)
            fail_msg("kubectl kustomize %s failed: %s", kustomizations[i], err ? err : "");
        free(err);
        char *yaml = h_read_file(rendered(i));
        assert_non_null(yaml);
        int objects = 0;
        for (const char *p = yaml; (p = strstr(p, "\nkind: ")); p++)
            objects++;
        objects += !strncmp(yaml, "kind: ", 6);
        printf("# %s: %d objects\n", kustomizations[i], objects);
        assert_true(objects >= 1);
        free(yaml);
    }
}

static void every_rendered_object_validates_against_the_kubernetes_api_schemas(void **state)
{
    (void)state;
    for (size_t i = 0; i < NKUST; i++) {
        char cmd[1400], *out = NULL;
        snprintf(cmd, sizeof(cmd), "node '%s' schema '%s'", checker, rendered(i));
        int rc = h_run(cmd, &out);
        printf("# %s:\n", kustomizations[i]);
        h_diag(out);
        if (rc != 0)
            fail_msg("%s does not validate (check.mjs exit %d)", kustomizations[i], rc);
        free(out);
    }
}

/* check.mjs rules on a rendering; its output into *out (caller frees). Returns its status. */
static int rules(const char *file, char **out)
{
    char cmd[1800];
    snprintf(cmd, sizeof(cmd), "node '%s' rules '%s' '%s'", checker, file, opts_path);
    return h_run(cmd, out);
}

static void every_overlay_keeps_the_deployment_rules(void **state)
{
    (void)state;
    for (size_t i = 0; i < NOVERLAYS; i++) {
        char *out = NULL;
        int rc = rules(overlay_rendered(overlays[i]), &out);
        printf("# overlay %s:\n", overlays[i]);
        char *settings = strstr(out, "SETTINGS ");
        if (settings)
            *settings = '\0'; /* the next test reads it */
        h_diag(out);
        if (rc != 0)
            fail_msg("overlay %s breaks the deployment rules (check.mjs exit %d)", overlays[i], rc);
        free(out);
    }
}

/* `bulkhead config --effective` with the environment and tier file an overlay gives. */
static void the_settings_each_overlay_gives_are_accepted_by_the_server(void **state)
{
    (void)state;
    for (size_t i = 0; i < NOVERLAYS; i++) {
        char *out = NULL;
        assert_int_equal(rules(overlay_rendered(overlays[i]), &out), 0);
        const char *line = strstr(out, "SETTINGS ");
        assert_non_null(line);
        json_t *s = json_loads(line + strlen("SETTINGS "), JSON_DISABLE_EOF_CHECK, NULL);
        assert_non_null(s);
        free(out);
        char tiers[600];
        snprintf(tiers, sizeof(tiers), "%s/kube-tiers-%s.json", h_work(), overlays[i]);
        assert_int_equal(json_dump_file(json_object_get(s, "tiers"), tiers, 0), 0);
        /* env -i: only what the overlay gives (and the tier file, at its path here). */
        char cmd[8000];
        int n = snprintf(cmd, sizeof(cmd), "cd '%s' && env -i", h_work());
        const char *k;
        json_t *v;
        json_object_foreach(json_object_get(s, "given"), k, v)
        {
            const char *val = strcmp(k, "TIERS_FILE") ? json_string_value(v) : tiers;
            n += snprintf(cmd + n, sizeof(cmd) - (size_t)n, " '%s=%s'", k, val);
        }
        snprintf(cmd + n, sizeof(cmd) - (size_t)n, " '%s' config --effective", h_bin());
        json_decref(s);
        int rc = h_run(cmd, &out);
        if (rc != 0)
            fail_msg("overlay %s: the server refuses its settings:\n%s", overlays[i], out);
        /* The tiers it runs with are the overlay's. */
        assert_non_null(strstr(out, "TIERS_FILE="));
        printf("# overlay %s: `bulkhead config --effective` accepts its settings and tier file\n",
               overlays[i]);
        free(out);
    }
}

/* Each mutation of the dev rendering (a sed script) must make check.mjs fail with `expect`. */
static void the_checks_fail_on_a_broken_manifest(void **state)
{
    (void)state;
    static const struct {
        const char *mode, *sed, *expect;
    } broken[] = {
        {"schema", "s/livenessProbe:/livenesProbe:/", "livenesProbe: unknown field"},
        {"schema", "s/runAsUser: 10001/runAsUser: bulkhead/", "runAsUser must be integer"},
        {"schema", "s/kind: PodDisruptionBudget/kind: PodDisruptionBudgett/", "no schema for"},
        {"rules", "/preStop:/,/- \"5\"/d", "no preStop pause"},
        {"rules", "s/terminationGracePeriodSeconds: 20/terminationGracePeriodSeconds: 15/",
         "is not longer than the preStop pause"},
        {"rules", "s/runAsUser: 10001/runAsUser: 1000/", "is not the image's user"},
        {"rules", "s/readOnlyRootFilesystem: true/readOnlyRootFilesystem: false/",
         "readOnlyRootFilesystem is not true"},
        {"rules", "s/- ALL/- NET_RAW/", "do not drop ALL"},
        {"rules", "s/type: RuntimeDefault/type: Unconfined/", "not RuntimeDefault"},
        {"rules", "s/cpu: \"1\"/cpu: 1500m/", "is not a whole number of CPUs"},
        {"rules", "s/HTTP_THREADS: \"0\"/HTTP_THREADS: \"4\"/", "HTTP_THREADS=4"},
        {"rules", "s/path: \\/readyz/path: \\/health/", "readinessProbe asks /health"},
        {"rules", "s/OPS_PORT: \"9090\"/OPS_PORT: \"0\"/", "OPS_PORT is not set"},
        {"rules", "/namespaceSelector:/,/name: monitoring/d", "admits the operators' port"},
        {"rules", "s/maxUnavailable: 1/maxUnavailable: 0/", "allows no disruption"},
        {"rules", "s/maxReplicas: 2/maxReplicas: 3/", "connections >"},
        {"rules", "s/LOG_FORMAT:/LOG_FROMAT:/", "LOG_FROMAT is not one"},
        {"rules", "s/enableServiceLinks: false/enableServiceLinks: true/",
         "enableServiceLinks is not false"},
    };
    const char *dev = overlay_rendered("dev");
    for (size_t i = 0; i < sizeof(broken) / sizeof(broken[0]); i++) {
        char bad[700], cmd[2400], *out = NULL;
        snprintf(bad, sizeof(bad), "%s/kube-broken-%zu.yaml", h_work(), i);
        snprintf(cmd, sizeof(cmd), "sed '%s' '%s' >'%s' && ! cmp -s '%s' '%s'", broken[i].sed, dev,
                 bad, dev, bad);
        if (h_run(cmd, NULL) != 0)
            fail_msg("mutation %zu (%s) changed nothing in the dev rendering", i, broken[i].sed);
        if (!strcmp(broken[i].mode, "schema"))
            snprintf(cmd, sizeof(cmd), "node '%s' schema '%s'", checker, bad);
        else
            snprintf(cmd, sizeof(cmd), "node '%s' rules '%s' '%s'", checker, bad, opts_path);
        int rc = h_run(cmd, &out);
        if (rc != 1 || !strstr(out, broken[i].expect))
            fail_msg("mutation \"%s\": check.mjs %s exited %d without \"%s\":\n%s", broken[i].sed,
                     broken[i].mode, rc, broken[i].expect, out);
        free(out);
    }
    printf("# %zu broken manifests, each refused with its reason\n",
           sizeof(broken) / sizeof(broken[0]));
}

static void the_copies_inside_the_kustomizations_are_current(void **state)
{
    (void)state;
    static const char *const pairs[][2] = {
        {"config/tiers.json", "deploy/kubernetes/base/tiers.json"},
        {"init-db.sql", "deploy/kubernetes/overlays/dev/init-db.sql"},
    };
    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
        char cmd[1400];
        snprintf(cmd, sizeof(cmd), "cd '%s' && cmp '%s' '%s'", h_root(), pairs[i][0], pairs[i][1]);
        if (h_run(cmd, NULL) != 0)
            fail_msg("%s differs from %s: copy it (kustomize reads nothing outside its folder)",
                     pairs[i][1], pairs[i][0]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_kustomization_renders_with_kubectl),
        cmocka_unit_test(every_rendered_object_validates_against_the_kubernetes_api_schemas),
        cmocka_unit_test(every_overlay_keeps_the_deployment_rules),
        cmocka_unit_test(the_settings_each_overlay_gives_are_accepted_by_the_server),
        cmocka_unit_test(the_checks_fail_on_a_broken_manifest),
        cmocka_unit_test(the_copies_inside_the_kustomizations_are_current),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
