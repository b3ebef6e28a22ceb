/*
 * main: the bulkhead command. With no arguments (or "serve") it runs the server; "tenant"
 * manages tenants and API keys; --help and --version print and exit.
 *
 * Settings come from the environment, after a .env file in the working directory has filled
 * in what the environment leaves unset.
 */
#include "apierr.h"
#include "config.h"
#include "log.h"
#include "server.h"
#include "tenantcli.h"
#include "tiers.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#ifndef BULKHEAD_VERSION
#define BULKHEAD_VERSION "dev"
#endif

static void main_usage(FILE *out)
{
    fprintf(
        out,
        "bulkhead %s: a multi-tenant HTTP API server that isolates tiers and tenants\n\n"
        "usage: bulkhead [serve]          run the server (Ctrl-C or SIGTERM to stop,\n"
        "                                 SIGHUP to reload TIERS_FILE)\n"
        "       bulkhead tenant ...       manage tenants and API keys (bulkhead tenant --help)\n"
        "       bulkhead config [--markdown]  print every setting\n"
        "       bulkhead config --effective   print the settings and tiers in force\n"
        "                                 (environment, then .env, then defaults; secrets masked)\n"
        "       bulkhead errors [--markdown]  print every error code\n"
        "       bulkhead --help | --version\n\n"
        "Environment (a .env file in the working directory fills in unset ones; an empty value\n"
        "counts as unset):\n",
        BULKHEAD_VERSION);
    config_print_help(out, false);
    fprintf(out, "\nPer-tier settings (TIERS_FILE, JSON: {\"tier\": {\"key\": n, ...}}); a tier "
                 "named like a\nbuilt-in one keeps its built-in values for keys left out:\n");
    tiers_print_help(out, false);
}

/* Settings and tiers, shared by serve, tenant and config --effective. origin may be NULL.
 * Returns 0 or prints why and returns 1. */
static int main_load(struct config *cfg, struct tier_table *tiers, struct config_origin *origin)
{
    char err[512];
    if (config_load_all(cfg, ".env", origin, err, sizeof(err))) {
        fprintf(stderr, "bulkhead: configuration refused: %s\n", err);
        return 1;
    }
    if (cfg->tiers_file[0]) {
        if (tiers_load_file(cfg->tiers_file, tiers, err, sizeof(err))) {
            fprintf(stderr, "bulkhead: configuration refused: %s\n", err);
            config_free(cfg);
            return 1;
        }
    } else {
        tiers_builtin(tiers);
    }
    return 0;
}

static int main_serve(void)
{
    struct config cfg;
    struct tier_table tiers;
    if (main_load(&cfg, &tiers, NULL))
        return 1;
    log_setup(cfg.log_format, cfg.log_level, cfg.access_log, STDOUT_FILENO);
    log_sampling(cfg.access_log_sample, cfg.access_log_slow_ms * 1000);

    /* Every thread inherits this mask; only server_wait receives these signals. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    static struct server srv; /* large; lives for the whole process */
    if (server_start(&srv, &cfg, &tiers) != 0) {
        log_error("start", "bulkhead could not start (see the messages above)");
        return 1;
    }
    log_info("ready", "bulkhead %s ready", BULKHEAD_VERSION);
    server_wait(&srv);
    server_stop(&srv);
    return 0;
}

/* bulkhead config --effective: what serve would run with, without starting anything. */
static int main_effective(void)
{
    struct config cfg;
    struct tier_table tiers;
    struct config_origin origin;
    if (main_load(&cfg, &tiers, &origin))
        return 1;
    printf("# bulkhead %s: the settings in force (the environment, then .env, then the defaults;\n"
           "# an empty value counts as unset); secrets masked\n",
           BULKHEAD_VERSION);
    config_print_effective(stdout, &cfg, &origin);
    printf("# tiers in force (%s%s):\n", cfg.tiers_file[0] ? "TIERS_FILE " : "built-in",
           cfg.tiers_file);
    tiers_print_table(stdout, &tiers, "#   ");
    config_free(&cfg);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 &&
        (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help"))) {
        main_usage(stdout);
        return 0;
    }
    if (argc >= 2 && (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V"))) {
        printf("bulkhead %s\n", BULKHEAD_VERSION);
        return 0;
    }
    if (argc == 3 && !strcmp(argv[1], "config") && !strcmp(argv[2], "--effective"))
        return main_effective();
    if (argc >= 2 && !strcmp(argv[1], "config")) {
        bool md = argc >= 3 && !strcmp(argv[2], "--markdown");
        if (md)
            printf("#### Environment\n\n");
        config_print_help(stdout, md);
        printf(md ? "\n#### Per-tier keys (TIERS_FILE)\n\n" : "\nPer-tier keys:\n");
        tiers_print_help(stdout, md);
        return 0;
    }
    if (argc >= 2 && !strcmp(argv[1], "errors")) {
        apierr_print(stdout, argc >= 3 && !strcmp(argv[2], "--markdown"));
        return 0;
    }
    if (argc >= 2 && !strcmp(argv[1], "tenant")) {
        struct config cfg;
        struct tier_table tiers;
        if (main_load(&cfg, &tiers, NULL))
            return 1;
        int rc = tenantcli_main(&cfg, &tiers, argc - 2, argv + 2);
        config_free(&cfg);
        return rc;
    }
    if (argc == 1 || (argc == 2 && !strcmp(argv[1], "serve")))
        return main_serve();
    fprintf(stderr, "bulkhead: unknown command \"%s\"\n\n", argv[1]);
    main_usage(stderr);
    return 2;
}
