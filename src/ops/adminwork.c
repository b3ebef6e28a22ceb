/*
 * adminwork: the admin worker (see adminwork.h): run a job through tenantdb, map its result to
 * a reply, log a change, resume the request.
 */
#include "adminwork.h"
#include "apierr.h"
#include "compiler.h"
#include "log.h"
#include "mclock.h"
#include "request.h"
#include "tenantdb.h"
#include "workpool.h"
#include "xalloc.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct adminwork {
    char *conninfo;        /* owned: DATABASE_URL */
    struct workpool *pool; /* owned: the queue and its one worker */
    struct dbconn *db;     /* the worker thread's; NULL until the first job, or once lost */
    int stop_pipe[2];      /* adminwork_stop writes [1]; the connection's waits poll [0] */
};

static const char *const adminwork_actions[] = {
    [ADMINWORK_CREATE] = "create", [ADMINWORK_UPDATE] = "update", [ADMINWORK_ROTATE] = "rotate",
    [ADMINWORK_REVOKE] = "revoke", [ADMINWORK_LIST] = NULL,       [ADMINWORK_GET] = NULL,
    [ADMINWORK_AUDIT] = NULL,
};

static struct adminwork_job *adminwork_job_of(struct fairq_item *item)
{
    return container_of(item, struct adminwork_job, item);
}

/* The worker's connection, opened (and the schema brought up to date) when there is none or
 * the last one was closed by the server. */
static int adminwork_conn(struct adminwork *w, char *err, size_t errlen)
{
    if (w->db && dbconn_is_dead(w->db)) {
        dbconn_close(w->db);
        w->db = NULL;
    }
    if (w->db)
        return 0;
    return tenantdb_connect(w->conninfo, "bulkhead-admin", &w->stop_pipe[0], &w->db, err, errlen);
}

static int adminwork_exec(struct dbconn *db, const struct adminwork_job *job,
                          struct tenantdb_result *res)
{
    const struct tenantdb_actor who = {
        .who = job->actor, .address = job->address, .request_id = job->r->request_id};
    const char *name = job->name[0] ? job->name : NULL;
    switch (job->op) {
    case ADMINWORK_CREATE:
        return tenantdb_create(db, &job->req, &who, res);
    case ADMINWORK_LIST:
        return tenantdb_list(db, name, job->limit, res);
    case ADMINWORK_GET:
        return tenantdb_get(db, job->name, res);
    case ADMINWORK_UPDATE:
        return tenantdb_update(db, job->name, &job->req, &who, res);
    case ADMINWORK_ROTATE:
        return tenantdb_rotate(db, job->name, &who, res);
    case ADMINWORK_REVOKE:
        return tenantdb_revoke(db, job->name, &who, res);
    case ADMINWORK_AUDIT:
        return tenantdb_audit(db, job->before, name, job->limit, res);
    }
    return -EINVAL;
}

static void adminwork_free_text(void *p)
{
    free(p);
}

/* The tenant with its new key: shown in this reply and nowhere else (never logged). */
static char *adminwork_with_key(const char *tenant_json, const char *key)
{
    json_t *o = json_loads(tenant_json, 0, NULL);
    if (!json_is_object(o))
        abort(); /* PostgreSQL built it with json_build_object */
    json_object_set_new(o, "api_key", json_string(key));
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!text)
        abort();
    return text;
}

/* A job that ran: its reply, and the event line of a change. res->json moves into the reply. */
static void adminwork_answer(const struct adminwork_job *job, struct tenantdb_result *res)
{
    struct request *r = job->r;
    const char *action = adminwork_actions[job->op];
    if (action)
        log_info("tenant_change", "%s %s by %s from %s (request %s): before %s, after %s", action,
                 job->op == ADMINWORK_CREATE ? job->req.name : job->name, job->actor, job->address,
                 r->request_id, res->before ? res->before : "null", res->json);
    if (job->op == ADMINWORK_REVOKE) {
        request_reply_static(r, 204, OUTCOME_OK, "application/json", "", 0);
        return;
    }
    char *body = res->json;
    res->json = NULL;
    unsigned status = 200;
    if (res->key[0]) {
        char *with_key = adminwork_with_key(body, res->key);
        free(body);
        body = with_key;
        status = 201;
    }
    request_reply_owned(r, status, OUTCOME_OK, body, strlen(body), adminwork_free_text, body);
}

/* A job that failed: the error reply, the same words as the CLI's. */
static void adminwork_fail(const struct adminwork_job *job, int rc, const char *err)
{
    struct request *r = job->r;
    char msg[160];
    const char *name = job->op == ADMINWORK_CREATE ? job->req.name : job->name;
    tenantdb_strerror(rc, name, msg, sizeof(msg));
    if (rc == -ENOENT) {
        apierr_replyf(r, APIERR_TENANT_NOT_FOUND, "%s", msg);
    } else if (rc == -EEXIST) {
        apierr_replyf(r, APIERR_TENANT_EXISTS, "%s", msg);
    } else if (rc == -ECONNRESET) {
        log_warn("admin_db", "cannot reach the database: %s", err);
        apierr_reply(r, APIERR_DATABASE_UNAVAILABLE);
    } else if (rc == -ECANCELED) {
        apierr_reply(r, APIERR_SHUTTING_DOWN); /* adminwork_stop ended its wait */
    } else {
        log_warn("admin_db", "%s failed: %s", adminwork_actions[job->op] ? "a change" : "a read",
                 err);
        apierr_reply(r, APIERR_DATABASE_ERROR);
    }
}

/* The worker thread. */
static void adminwork_run(struct fairq_item *item, void *ctx)
{
    struct adminwork *w = ctx;
    struct adminwork_job *job = adminwork_job_of(item);
    struct request *r = job->r;
    int64_t start = mclock_now_us();
    r->queue_us = start - item->enqueued_us;
    struct tenantdb_result res = {0};
    int rc = adminwork_conn(w, res.err, sizeof(res.err));
    if (!rc)
        rc = adminwork_exec(w->db, job, &res);
    r->query_us = mclock_now_us() - start;
    if ((rc == -ECONNRESET || rc == -ECANCELED) && w->db) {
        dbconn_close(w->db); /* lost, silent or mid-statement: the next job opens a new one */
        w->db = NULL;
    }
    if (rc)
        adminwork_fail(job, rc, res.err);
    else
        adminwork_answer(job, &res);
    tenantdb_result_free(&res);
    free(job);
    request_resume(r);
}

/* The janitor (expired) or a shutdown: the job never ran. */
static void adminwork_drop(struct fairq_item *item, enum workpool_drop_reason why, void *ctx)
{
    (void)ctx;
    struct adminwork_job *job = adminwork_job_of(item);
    struct request *r = job->r;
    r->queue_us = mclock_now_us() - item->enqueued_us;
    if (why == WORKPOOL_EXPIRED)
        apierr_replyf(r, APIERR_ADMIN_BUSY, "waited %" PRId64 " ms for the admin worker",
                      r->queue_us / 1000);
    else
        apierr_reply(r, APIERR_SHUTTING_DOWN);
    free(job);
    request_resume(r);
}

int adminwork_start(const char *conninfo, struct adminwork **out)
{
    struct adminwork *w = xcalloc(1, sizeof(*w));
    if (pipe2(w->stop_pipe, O_CLOEXEC)) {
        int rc = -errno;
        free(w);
        return rc;
    }
    w->conninfo = xstrdup(conninfo);
    const struct workpool_limits lim = {.threads = 1,
                                        .queue_max = ADMINWORK_QUEUE_MAX,
                                        .tenant_queue_max = ADMINWORK_QUEUE_MAX,
                                        .share = {.size = 1, .cap = 1}};
    const struct workpool_ops ops = {.run = adminwork_run, .drop = adminwork_drop, .ctx = w};
    int rc = workpool_create("admin", &lim, &ops, &w->pool);
    if (rc) {
        close(w->stop_pipe[0]);
        close(w->stop_pipe[1]);
        free(w->conninfo);
        free(w);
        return rc;
    }
    *out = w;
    return 0;
}

int adminwork_submit(struct adminwork *w, struct adminwork_job *job)
{
    int rc = workpool_submit(w->pool, "admin", &job->item);
    return rc == -EDQUOT ? -EAGAIN : rc;
}

void adminwork_expire(struct adminwork *w, int64_t now_us)
{
    workpool_expire(w->pool, now_us - (int64_t)ADMINWORK_QUEUE_TIMEOUT_MS * 1000, now_us);
}

void adminwork_stop(struct adminwork *w)
{
    if (!w)
        return;
    /* Readable for good: the running job's wait ends now, and so would any later one. */
    if (write(w->stop_pipe[1], "x", 1) < 0 && errno != EAGAIN)
        log_warn("admin", "cannot signal the admin worker to stop: %s", strerror(errno));
    workpool_stop(w->pool);
}

void adminwork_destroy(struct adminwork *w)
{
    if (!w)
        return;
    adminwork_stop(w);
    workpool_destroy(w->pool);
    dbconn_close(w->db);
    close(w->stop_pipe[0]);
    close(w->stop_pipe[1]);
    free(w->conninfo);
    free(w);
}
