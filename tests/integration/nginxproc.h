/*
 * nginxproc: the shipped load balancer (deploy/nginx.conf + deploy/proxy.conf) run by a real
 * nginx on loopback, for the tests that put two instances behind it (test_scaleout,
 * test_dashboard). Only what Docker provides is rewritten: the two upstream servers api:8080 and
 * api-2:8080 become the given loopback ports, the public (80) and operators' (8090) listeners
 * free loopback ports, the include path and temp paths the test's folder; the `resolve`
 * parameter is dropped because Debian 12's nginx (1.22) predates it (test_deploy checks the
 * shipped file has it). Everything else (locations, refusals, proxy settings) runs as shipped.
 */
#ifndef BULKHEAD_TEST_NGINXPROC_H
#define BULKHEAD_TEST_NGINXPROC_H

#include <sys/types.h>

struct nginxproc {
    pid_t pid;          /* 0 when not running */
    int port, ops_port; /* the public listener, the operators' listener */
    char base[64];      /* http://127.0.0.1:port */
    char ops_base[64];  /* http://127.0.0.1:ops_port */
    char dir[300];      /* config, temp files and logs */
    char errlog[400];   /* nginx's error log */
};

/* Start nginx over the instances listening on 127.0.0.1:port_a and :port_b; waits until the
 * public listener answers /health 200 (bounded). 0 or -1 (with a message). */
int nginxproc_start(struct nginxproc *n, int port_a, int port_b);
/* SIGTERM, then SIGKILL after 10 s; reaps it. */
void nginxproc_stop(struct nginxproc *n);

#endif
