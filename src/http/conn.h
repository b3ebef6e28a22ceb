/*
 * conn: one client connection on an event loop (evloop.h): its reads, the request it carries,
 * the reply's writes, keep-alive and the deadlines that bound each stage.
 *
 * A connection costs a struct conn while idle: the read buffer and the parser's field table
 * are taken when a request's first byte arrives (a buffer of CONN_BUF_SIZE from the loop's
 * free list, grown up to HTTP_CONNECTION_MEMORY for a long head) and given back when the reply
 * has gone out, so 10,000 idle keep-alive connections cost 10,000 structs. Its state says
 * what it waits for, and which deadline is armed (one evloop timer per connection):
 *
 *   IDLE --first byte--> HEAD --head read--> BODY --body read--> BUSY --reply set--> WRITE
 *     ^ idle timeout       | head deadline      | body deadline    | (its handler's)     |
 *     +---------------------------------- reply written, keep-alive ---------------------+
 *   any refusal (400/408/431/505/...), Connection: close, or drain: WRITE then LINGER
 *   (write side shut, input read and dropped until the client closes or CONN_LINGER_US).
 *
 * An idle connection that has served a request (keep-alive) sits on its loop's idle list, and a
 * lingering one (its last reply out) on its linger list, oldest first: under connection pressure
 * http.c closes the oldest lingering one, which has had its answer, and only then, for a client
 * that will be served, the oldest idle one (conn_evict_oldest). So refused connections, a flood
 * of them included, never hold the cap for CONN_LINGER_US.
 * Sockets are edge-triggered in the loop's connection epoll set (registered once, for reads and
 * writes), so a request costs no epoll_ctl. conn.c holds a connection's life and its loop's
 * bookkeeping; connrx.c the request coming in (reads, parse, dispatch), conntx.c the reply
 * going out (writes, keep-alive, linger): one connection, three modules, one thread.
 *
 * DESIGN: a connection and everything on it belong to its loop's thread. A request handed on
 * (request_defer: to a worker, the tarpit, a statement on another loop) comes back through
 * request_resume, which calls conn_resume: on the loop's own thread inside dispatch it only
 * notes it (the connection replies when dispatch returns); on the loop's thread later it defers
 * the reply to the end of the turn (evloop_defer); from any other thread it posts it to the
 * loop (evloop_post: the inbox mutex orders the reply before it). The reply has a task of its
 * own (resume), sent only for a request in REQUEST_READY; the connection's local work (the next
 * pipelined request, a read put off, its free) is another task, never posted. A
 * connection is never closed while its request is handed on (BUSY has no deadline; a socket
 * event only notes that bytes or the client's end wait), so the task always finds it; at
 * shutdown one still handed on is orphaned instead (conn_close_all). The counters are relaxed
 * atomics read from any thread.
 */
#ifndef BULKHEAD_CONN_H
#define BULKHEAD_CONN_H

#include "apierr.h"
#include "evloop.h"
#include "h1.h"
#include "http.h"

#include <netinet/in.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct request;
struct request_hooks;

#define CONN_BUF_SIZE  2048    /* a request's first buffer (most heads fit) */
#define CONN_FREE_BUFS 64      /* buffers of that size a loop keeps for the next requests */
#define CONN_LINGER_US 2000000 /* longest wait for a refused client to close first */

/* What every connection of a listener shares; set before the loops start, then read-only. */
struct conn_env {
    const struct request_hooks *hooks;     /* given to every request */
    const atomic_bool *draining;           /* while true, new requests get 503 shutting_down */
    bool (*drain_exempt)(const char *url); /* except these (the probes), or NULL */
    bool (*dispatch)(void *ctx, struct request *r); /* see http.h */
    void *ctx;
    size_t max_head; /* HTTP_CONNECTION_MEMORY: the largest head served */
    size_t max_body; /* HTTP_MAX_BODY_BYTES */
    int64_t idle_us; /* HTTP_IDLE_TIMEOUT_S: idle keep-alive, stalled writes */
    int64_t head_us; /* HTTP_HEAD_TIMEOUT_MS: the whole head, from its 1st byte */
    int64_t body_us; /* HTTP_BODY_TIMEOUT_MS: the whole body, from the head */
};

/* Why a connection was refused or closed by the server; counted per loop, logged once per
 * address and period (http.c). */
enum conn_refusal {
    CONN_HEAD_TIMEOUT, /* the head was not complete within HTTP_HEAD_TIMEOUT_MS: 408 */
    CONN_BODY_TIMEOUT, /* the body was not complete within HTTP_BODY_TIMEOUT_MS: 408 */
    CONN_MALFORMED,    /* not HTTP/1.x, or a head over HTTP_CONNECTION_MEMORY: 400/431/414/505 */
    CONN_ADDR_CAP,     /* the address holds HTTP_MAX_CONNECTIONS_PER_ADDRESS: 429 */
    CONN_EVICTED,      /* idle keep-alive, closed for a new client at HTTP_MAX_CONNECTIONS */
    CONN_REFUSAL_COUNT
};

/* The client's address as accepted (the socket's peer). */
struct conn_addr {
    sa_family_t family; /* AF_INET or AF_INET6 */
    uint8_t bytes[16];  /* the address (4 bytes for IPv4) */
    char text[46];      /* printed (INET6_ADDRSTRLEN) */
};

enum conn_state {
    CONN_IDLE,   /* between requests: no buffer; idle deadline (the head deadline from accept,
                    before its first request); on the idle list once it served */
    CONN_HEAD,   /* a head is arriving: buffer taken; head deadline from its first byte */
    CONN_BODY,   /* the body is arriving: body deadline from the head's end */
    CONN_BUSY,   /* its request is with a handler (maybe handed on); no deadline of ours */
    CONN_WRITE,  /* the reply is going out; a stall deadline (the idle timeout) */
    CONN_LINGER, /* the last reply went out; input dropped until EOF or CONN_LINGER_US; on
                    the linger list (evictable first) */
    CONN_CLOSED, /* closed: freed by its task at the end of the turn (callers up the stack
                    may still look at it) */
};

struct conn_loop;
struct conn;

/* A list of a loop's connections, oldest first (idle keep-alive, or lingering). */
struct conn_list {
    struct conn *head, *tail;
    unsigned n;
};

struct conn {
    struct conn_loop *loop; /* its loop's state (not owned) */
    int fd;                 /* owned */
    enum conn_state state;
    bool served;         /* it finished a request: idle now means keep-alive idle (evictable) */
    bool may_read;       /* the socket may hold unread bytes (an edge arrived while busy) */
    bool keep_alive;     /* the request in progress allows another after it */
    bool in_dispatch;    /* the loop is inside dispatch for its request */
    bool resumed_inline; /* its request was resumed during dispatch, on this thread */
    bool task_queued;    /* task is deferred on this loop (loop thread only) */
    bool parse_pending;  /* bytes of a pipelined request wait in the buffer (task) */
    bool end_seen;       /* the client's end (or an error) was reported: read on to it */
    bool client_left;    /* the client's end came while BUSY: its reply is dropped (499);
                            its request's owner may ask (request_client_left) */
    struct evloop_watch timer; /* the stage's deadline (fd -1: a timer alone) */
    /* The connection's own work for later, deferred on its loop (task_queued): the next
     * pipelined request or bytes left in the socket (keep-alive), or its free. */
    struct evloop_task task;
    /* The reply of a handed-on request, once resumed (conn_resume): posted from another
     * thread, or deferred on the loop's. Apart from task: a task sits in one list at a time,
     * and a pipelined request's parse must never send another request's reply. */
    struct evloop_task resume;
    struct conn *prev, *next;   /* the loop's list of connections */
    struct conn_list *on;       /* the loop's idle or linger list it is on, or NULL */
    struct conn *lprev, *lnext; /* its neighbours on that list */
    struct h1 rx;               /* the request being read; rx.buf NULL while idle */
    struct request *req;        /* owned from its head to its reply's end (or handed on) */
    size_t out_off;             /* bytes of the reply written */
    int64_t stage_deadline_us;  /* HEAD or BODY: when the whole stage must be done */
    void *addr_entry;           /* http.c's count for its address (not owned) */
    bool addr_counted;          /* it counts against its address's cap (http.c) */
    struct conn_addr addr;      /* the client's (its requests point at its text) */
};

/* One loop's connections (embedded in http.c's per-loop state; loop thread only, except the
 * counters). */
struct conn_loop {
    const struct conn_env *env;
    struct evloop_thread *t; /* the loop (set before its first connection) */
    bool stopping;           /* http_stop has begun: no deadline is armed any more */
    bool final;              /* the loop has ended: a close frees at once */
    struct conn *all;        /* every connection */
    struct conn_list idle;   /* keep-alive idle connections (served, CONN_IDLE) */
    struct conn_list linger; /* CONN_LINGER: answered, waiting for the client to close */
    unsigned nconns;
    char *free_bufs[CONN_FREE_BUFS]; /* owned: CONN_BUF_SIZE each */
    unsigned nfree;
    int64_t date_s; /* the second date was printed for */
    char date[40];  /* "Date: ...\r\n" of that second */
    /* http.c: a connection closed (its address count, listening again), and a refusal (its
     * log line, once per address and period). */
    void (*closed)(struct conn_loop *l, struct conn *c);
    void (*refused)(struct conn_loop *l, struct conn *c, enum conn_refusal why);
    void (*evictable)(struct conn_loop *l); /* a connection joined the idle or linger list */
    struct http_counters *counters;         /* shared by the loops (http.h), not owned */
};

/* Loop thread: a new connection on fd (non-blocking; its epoll registration is the caller's:
 * edge-triggered EPOLLIN | EPOLLOUT | EPOLLRDHUP with data.ptr = the connection). */
struct conn *conn_open(struct conn_loop *l, int fd, void *addr_entry, const struct conn_addr *a);

/* Loop thread: refuse a connection just accepted with error e (JSON), then close it: after a
 * linger (CONN_LINGER_US at most; evictable meanwhile), or at once when !linger (a connection
 * over the cap, which nothing could be closed for). */
void conn_refuse(struct conn *c, enum apierr e, const char *message, bool linger);

/* Loop thread: the socket reported events (EPOLLIN, EPOLLOUT, ...). */
void conn_event(struct conn *c, uint32_t events);

/* Loop thread: make room for a new connection: close the oldest lingering connection, or with
 * none and idle_too, the oldest keep-alive idle one (counted CONN_EVICTED). False when there
 * was nothing to close. */
bool conn_evict_oldest(struct conn_loop *l, bool idle_too);

/* Loop thread (after the loop stopped): close every connection. A request still handed on is
 * orphaned (REQUEST_ORPHANED): its socket closes, its connection's memory stays with it until
 * request_resume frees it (conn_orphan_free). */
void conn_close_all(struct conn_loop *l);

/* Any thread: free a connection orphaned by conn_close_all, its request finished. */
void conn_orphan_free(struct conn *c);

/* Loop thread: free the buffers kept for reuse. */
void conn_loop_free(struct conn_loop *l);

/* Count a refusal in k. */
void conn_counter_add(struct http_counters *k, enum conn_refusal why);

/* Any thread: c's request was resumed (request_resume): send its reply on c's loop. */
void conn_resume(struct conn *c);

/* ---- for the connection's own modules (connrx, conntx): loop thread ---------------------- */

/* Put c on the loop's idle or linger list (evictable: l->evictable is told), or take it off
 * the one it is on (none: nothing). */
void conn_list_add(struct conn *c, struct conn_list *list);
void conn_list_remove(struct conn *c);

/* A request's read buffer (CONN_BUF_SIZE), and giving it back (with the parser's table). */
char *conn_buf_take(struct conn_loop *l);
void conn_buf_give(struct conn *c);

/* The one deadline: after_us from now; a head's or body's (its stage deadline, or
 * HTTP_IDLE_TIMEOUT_S of silence from now, whichever is sooner); none. */
void conn_arm(struct conn *c, int64_t after_us);
void conn_arm_stage(struct conn *c, int64_t now);
void conn_disarm(struct conn *c);

/* Count a refusal of c (and log it, once per client and period: http.c). */
void conn_count(struct conn *c, enum conn_refusal why);

/* A served connection waits for its next request: no buffer, on the idle list, the idle
 * deadline (bytes that arrived meanwhile are read by its task). */
void conn_idle(struct conn *c);

/* Run c's task at the end of the turn (once, however often asked). */
void conn_later(struct conn *c);

/* Close now; the struct is freed at the end of the turn (callers up the stack may still look
 * at its state), or at once when the loop has ended. */
void conn_close(struct conn *c);

#endif
