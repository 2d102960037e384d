/*
 * server.h - mcpd's in-memory state and the seams between its modules.
 *
 * Threads: two libmicrohttpd daemons with epoll workers — the main one
 * (--threads) and one worker for control streams (acceptor.c says why);
 * --threads caller loops for the relay's hot routes (caller.c); one
 * housekeeper thread accepts connections, watches suspended sockets for a
 * vanished peer and parked streams for room to write, and runs the timers
 * (pings, GC, task deadlines, wake deadlines). All broker
 * state below — sessions, streams, tasks, wakes, waiting requests — is
 * guarded by server.mu. Lock order: server.mu, then the db's own mutex.
 *
 * Suspension rule (libmicrohttpd): a connection is suspended only from its
 * own callback, with server.mu held, after checking there is nothing to do
 * and that the server is not stopping; it is resumed by whoever makes work
 * for it, with server.mu held, only if its `suspended` flag is set; the
 * MHD_resume_connection() call itself runs in server_unlock().
 */
#ifndef MCPD_SERVER_H
#define MCPD_SERVER_H

#include "auth.h"
#include "buf.h"
#include "config.h"
#include "db.h"
#include "protocol.h"

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uthash.h>

#define TASK_ID_LEN 33
/* Block size of SSE responses. Chunked responses are assembled in the
 * connection's memory pool, so a larger block would only be allocated and
 * never used — on every idle control stream. */
#define SSE_BLOCK_SIZE 1024
#define CALLER_BACKLOG_MAX (16u << 20) /* SSE bytes a slow caller may fall behind */

struct req;
struct task;
struct caller_conn;
struct caller_loop;

/* A control stream: the body of GET _provider-stream, fed frames.
 *
 * Its first frames (hello) go out through MHD's content reader. Once that
 * has drained `out`, the stream is parked: MHD keeps the connection
 * suspended for the rest of its life and does not touch the socket, and
 * dispatch() writes each frame to the socket itself, as one HTTP chunk,
 * from whichever thread queues it. That spares every task frame a resume
 * (an eventfd wake-up of another worker and an epoll re-arm) and keeps idle
 * streams out of MHD's resume walks. Frames wait in `unsent` until
 * server_unlock() writes them, after server.mu is released; bytes the socket
 * does not take go out when the housekeeper sees the socket writable.
 * Ending the stream resumes the connection, and MHD writes the last chunk. */
struct stream {
    struct req *req;         /* the stream's request */
    struct session *session; /* NULL once replaced or closed */
    struct buf out;          /* frames for MHD's reader, before parking */
    int64_t next_ping;       /* monotonic ms */
    bool parked;             /* MHD is done with the socket; we write to it */
    int fd;                  /* the socket, once parked */
    /* Writing happens after server.mu is released (stream.c); wmu guards
     * what follows, and is taken after server.mu when both are held. */
    pthread_mutex_t wmu;
    struct buf unsent; /* chunk-framed bytes not written yet */
    bool flush_queued; /* a flush of unsent is pending on some thread */
    bool want_out;     /* the housekeeper watches for EPOLLOUT */
    bool closing;      /* end the response once everything is sent */
    bool broken;       /* a write failed or the backlog overflowed */
    bool dead;         /* the request finished; the socket may be gone */
    atomic_int refs;   /* the request's, plus one per pending flush */
};

/* A provider session with a bound control stream. */
struct session {
    char id[DB_SESSION_ID_LEN];
    char owner[DB_OWNER_MAX];
    struct stream *stream;
    struct task *tasks; /* in-flight tasks dispatched to this session (list) */
    int inflight;
    UT_hash_handle hh;
};

enum task_kind { TASK_INFER, TASK_WAKE };
enum task_state {
    TASK_PENDING,   /* sent, waiting for the publisher */
    TASK_DONE,      /* a final result or the last chunk arrived */
    TASK_FAILED,    /* publisher error or disconnect */
    TASK_TIMEDOUT,  /* infer or idle timeout passed */
    TASK_CANCELLED, /* the caller went away */
};

struct task {
    char id[TASK_ID_LEN];
    enum task_kind kind;
    enum task_state state;
    char session_id[DB_SESSION_ID_LEN];
    char llm_name[MCP_NAME_BUF];
    bool streaming;
    struct req *caller;    /* waiting request, NULL once it is gone */
    struct wake *wake;     /* for TASK_WAKE */
    int64_t deadline;      /* monotonic ms: overall timeout */
    int64_t idle_deadline; /* monotonic ms, 0 until the first chunk */
    int64_t started_at;
    /* The result for a non-streaming caller, or why the task failed. */
    int status;      /* publisher's status; for failures the status to reply */
    struct buf body; /* publisher's final body (raw JSON) */
    char error[256];
    struct task *next_in_session, *prev_in_session;
    UT_hash_handle hh;
};

/* A wake in flight for one hibernating Llm; callers wait on it. */
struct wake {
    char llm_name[MCP_NAME_BUF];
    char session_id[DB_SESSION_ID_LEN];
    struct task *task;
    struct req **held; /* callers in arrival order */
    int nheld, capheld;
    UT_hash_handle hh;
};

/* The routes (http.c matches them). */
enum route {
    R_NONE,
    R_HEALTHZ,
    R_LIST,
    R_GET,
    R_REGISTER,
    R_STREAM,
    R_HEARTBEAT,
    R_RESULT,
    R_INFER,
    R_OPENAI_CHAT,
    R_OPENAI_MODELS,
};

/* A request path matched against the routes. */
struct route_match {
    enum route route;
    const char *method;       /* the one method the route takes */
    char param[MCP_NAME_BUF]; /* a name (<= 100 chars) or a task id */
    bool bad_param;           /* path shape matched but the parameter is malformed */
};

/* What a route handler decided for a request whose reply comes later. */
enum req_wait { WAIT_NONE, WAIT_TASK, WAIT_WAKE };

/* One HTTP request: libmicrohttpd's per-request context, or a request of a
 * caller connection served by caller.c (then conn and cc are NULL). */
struct req {
    struct server *srv;
    struct MHD_Connection *conn;
    struct conn_ctx *cc;
    struct caller_conn *lc;   /* caller.c's connection, for its requests */
    int route;                /* matched once, before the body arrives */
    char param[MCP_NAME_BUF]; /* the route's :name or :id */
    bool openai;              /* error bodies in OpenAI's shape */
    bool started;             /* handler ran its route once the body was complete */
    char owner[DB_OWNER_MAX];
    struct buf body;
    bool too_large;
    /* Asynchronous replies (relay, wake, streams). */
    bool suspended;
    bool was_suspended; /* ever: other threads may hold r (cc->waiting) */
    bool peer_gone;
    enum req_wait wait;
    struct task *task;
    struct wake *wake;
    bool streaming;         /* the caller asked for "stream": true */
    bool sse_started;       /* an SSE response is queued to the caller */
    bool sse_ended;         /* nothing more will be appended to sse */
    struct buf sse;         /* SSE bytes for the caller not yet handed to MHD */
    int64_t next_keepalive; /* monotonic ms, for held streaming callers */
    char llm_name[MCP_NAME_BUF];
    int fail_status; /* a reply decided while suspended (503 etc.) */
    char fail_msg[256];
    int retry_after;
    struct stream *stream; /* for the control-stream request */
};

/* What is left of a finished task, so late result posts get 410. */
struct tombstone {
    char id[TASK_ID_LEN];
    char session_id[DB_SESSION_ID_LEN];
    int64_t expires;
    UT_hash_handle hh;
};

/* A cached routing row (see db_route_generation()). */
struct route_entry {
    char name[MCP_NAME_BUF];
    struct llm_route route;
    uint64_t gen;
    UT_hash_handle hh;
};

/* Per TCP connection (MHD's socket context): the socket we may watch. */
struct conn_ctx {
    uint64_t id;
    int fd;
    bool watched;
    struct req *waiting; /* the suspended request on this connection, if any */
    UT_hash_handle hh;
};

struct server {
    struct server_config cfg;
    struct db *db;
    struct auth *auth;
    struct MHD_Daemon *mhd;         /* everything but control streams */
    struct MHD_Daemon *mhd_streams; /* connections that open a control stream */
    struct MHD_Response *resp_ok;   /* shared 200 {"ok":true} */
    int port;

    /* caller connections (caller.c) */
    struct caller_loop *loops;
    unsigned int nloops;
    unsigned int next_loop; /* round robin, the acceptor's */

    /* acceptor (acceptor.c), run on the housekeeper's epoll set */
    int listen_fd;
    struct pending_conn *pending; /* accepted, first bytes not seen yet */
    int64_t accept_paused_until;  /* out of descriptors: 0 when accepting */

    pthread_mutex_t mu;
    struct session *sessions;
    struct task *tasks;
    struct wake *wakes;
    struct tombstone *tombstones; /* in insertion order: oldest first */
    struct route_entry *routes;   /* Llm name -> routing fields */
    unsigned int ntombstones;
    struct conn_ctx *conns;
    uint64_t next_conn_id;
    atomic_bool stopping;

    /* housekeeper */
    pthread_t hk_thread;
    int epfd;
    int evfd;
    int64_t hk_next_wake;
    int64_t next_ping;
    int64_t next_gc;
};

/* ---- lifecycle (server.c) ---- */
int server_start(struct server *srv, const struct server_config *cfg);
/* Closes every stream and waiting request, stops MHD, flips rows inactive. */
void server_stop(struct server *srv);

/* ---- http glue (http.c) ---- */
/* Starts a libmicrohttpd daemon without a listening socket (connections
 * come from acceptor.c) with `threads` workers; NULL on failure. */
struct MHD_Daemon *http_start(struct server *srv, unsigned int threads, unsigned int conn_limit);
enum MHD_Result http_reply_json(struct req *r, unsigned status, const char *json, size_t len);
/* 200 {"ok":true}, from a response made once (http_responses_init). */
enum MHD_Result http_reply_ok(struct req *r);
int http_responses_init(struct server *srv);
void http_responses_free(struct server *srv);
enum MHD_Result http_reply_error(struct req *r, unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Matches a path (no query string) against the routes. */
void http_match_route(const char *url, struct route_match *m);
/* The checks every request passes before its body is read: auth (for
 * /api/ and /v1/), route, method, declared size (content_length -1 when
 * none was declared). 0 with m filled when it may proceed; else the status
 * to refuse it with, msg saying why (405: allow m->method). */
unsigned http_check_head(struct server *srv, const char *url, const char *method,
                         const char *authorization, long long content_length, struct route_match *m,
                         char owner[DB_OWNER_MAX], char *msg, size_t msglen);
/* An error reply with an Allow header when allow is set. */
enum MHD_Result http_reply_refused(struct req *r, unsigned status, const char *allow,
                                   const char *msg);
/* Error reply with Retry-After. */
enum MHD_Result http_reply_unavailable(struct req *r, int retry_after, const char *msg);
/* Suspends r (server.mu held): registers its socket with the housekeeper. */
void http_suspend(struct req *r);
/* Resumes r if suspended (server.mu held); the resume itself happens in
 * server_unlock(), outside the mutex. */
void http_resume(struct req *r);
/* server.mu. Always unlock with server_unlock(): it runs deferred resumes. */
void server_lock(struct server *srv);
void server_unlock(struct server *srv);
/* The body of an SSE response fed from queued (server.mu held): hands MHD
 * what is queued, ends once ended and drained (or the server stops), fails
 * when the peer is gone, and otherwise suspends r until more is queued. */
ssize_t http_sse_pull(struct req *r, struct buf *queued, bool ended, char *out, size_t max);
/* A new text/event-stream response whose body reader gets r as its
 * closure; NULL when out of memory. */
struct MHD_Response *http_sse_response(MHD_ContentReaderCallback reader, struct req *r);

/* ---- provider routes (provider.c) ---- */
enum MHD_Result provider_register(struct req *r);
enum MHD_Result provider_heartbeat(struct req *r);
enum MHD_Result provider_list(struct req *r);
enum MHD_Result provider_get(struct req *r, const char *name);
enum MHD_Result provider_models(struct req *r);

/* ---- control streams (stream.c) ---- */
enum MHD_Result stream_open(struct req *r);
/* Queues a frame on the session's stream (server.mu held). The seam the
 * relay uses: returns 0, or -1 when no stream is bound or its buffer is full. */
int dispatch(struct server *srv, struct session *s, const char *frame, size_t len);
/* The housekeeper saw a parked stream's socket writable (server.mu held):
 * sends what waits in `unsent`. */
void stream_flush(struct stream *st);
/* Frame writes queued on this thread (server_unlock's part): takes them
 * (at most STREAM_DEFERRED_MAX) while server.mu is held, writes them after
 * it is released. */
#define STREAM_DEFERRED_MAX 64
unsigned int stream_take_deferred(struct stream **out);
void stream_flush_deferred(struct server *srv, struct stream **sts, unsigned int n);
/* The stream request finished (server.mu held). */
void stream_closed(struct req *r);
/* Pings at most max streams whose ping is due (server.mu held); true when
 * more are due. */
bool stream_ping_due(struct server *srv, int64_t now, int max);
/* Ends every stream (server.mu held), for shutdown. */
void stream_close_all(struct server *srv);

/* ---- relay (relay.c) ---- */
enum MHD_Result relay_infer(struct req *r, const char *name);
enum MHD_Result relay_openai_chat(struct req *r);
enum MHD_Result relay_result(struct req *r, const char *task_id);
/* Called when a suspended relay request is resumed (or re-entered). */
enum MHD_Result relay_resume(struct req *r);
/* The caller's request finished (server.mu held): cancels its task if open. */
void relay_request_done(struct req *r);
/* A session's stream went away (server.mu held): fails its tasks. */
void relay_session_lost(struct server *srv, struct session *s, const char *why);
/* Timer work (server.mu held); returns the next deadline (monotonic ms). */
int64_t relay_tick(struct server *srv, int64_t now);
/* Fails every waiting caller for shutdown (server.mu held). */
void relay_shutdown(struct server *srv);
/* Empties the routing cache (server.mu held). */
void route_cache_clear(struct server *srv);
/* Creates and dispatches an infer task for r (server.mu held). On failure
 * sets r->fail_status/fail_msg and returns -1. */
int relay_start_task(struct req *r, struct session *s);
/* Creates and dispatches a wake task for w (server.mu held); NULL on failure. */
struct task *relay_send_wake(struct server *srv, struct session *s, struct wake *w);
/* Answers a parked caller with an error: an SSE error event when its stream
 * has started, else status + msg (503 adds Retry-After). server.mu held. */
void relay_fail_caller(struct req *r, int status, int retry_after, const char *msg);

/* A waiting request of a caller connection has something to deliver
 * (server.mu held): relay_deliver() writes it out via caller.c. */
void relay_deliver(struct req *r);

/* ---- caller connections (caller.c) ---- */
enum caller_line { CALLER_NO, CALLER_YES, CALLER_MORE };
/* Whether a request line (the first n bytes of a request) is one caller.c
 * serves; CALLER_MORE when n bytes cannot tell yet. */
enum caller_line caller_classify(const char *p, size_t n);
/* Starts `threads` event loops; 0 or -1. */
int caller_start(struct server *srv, unsigned int threads);
/* Stops the loop threads: no connection is handed over after this. */
void caller_stop_threads(struct server *srv);
/* Closes what is left (every other thread stopped) and frees the loops. */
void caller_close_all(struct server *srv);
/* Takes an accepted connection whose first request is a caller's. */
void caller_take(struct server *srv, int fd, const struct sockaddr_storage *addr,
                 socklen_t addrlen);
/* Answers r (whole response, queued; written after server.mu is released
 * or the loop's event is done). */
void caller_reply(struct req *r, unsigned status, const char *ctype, const char *body, size_t len,
                  int retry_after, const char *allow);
/* The request's provider-session header, or NULL. */
const char *caller_session(const struct req *r);
/* Sends r's queued SSE bytes (the head first), and the end once ended. */
void caller_sse_send(struct req *r);
/* The request is finished (server.mu held when it ever waited): drops its
 * task or wake and lets its connection read the next request. */
void caller_finish(struct req *r);
/* http_resume() for caller requests: delivery deferred to server_unlock(). */
void caller_resume(struct req *r);
/* server_unlock()'s parts: deliveries (server.mu held), then writes. */
void caller_run_deliveries(void);
void caller_flush_deferred(void);

/* ---- wake-on-demand (wake.c) ---- */
/* Holds r until the Llm wakes (server.mu held); starts a wake if none. */
enum MHD_Result wake_hold(struct req *r, const char *session_id);
/* A wake task finished (server.mu held). */
void wake_task_finished(struct server *srv, struct task *t);
/* A held request went away (server.mu held). */
void wake_forget(struct req *r);
/* Timer work (server.mu held); returns the next deadline. */
int64_t wake_tick(struct server *srv, int64_t now);

/* ---- acceptor (acceptor.c) ---- */
/* The housekeeper's epoll data for the listening socket, and the tag of a
 * connection whose first bytes are awaited (its pointer is the rest).
 * Connection ids are small counters and never carry the tag bit. */
#define LISTEN_ID (UINT64_MAX - 1)
#define ACCEPT_TAG (UINT64_C(1) << 63)
/* Binds and listens; srv->port gets the port bound. 0, or -1 with errno. */
int acceptor_listen(struct server *srv, const struct sockaddr *addr, socklen_t addrlen);
/* Starts accepting (both daemons must run). 0 or -1. */
int acceptor_start(struct server *srv);
/* The listening socket is readable. The acceptor's state belongs to the
 * housekeeper thread, which calls these without server.mu. */
void acceptor_ready(struct server *srv);
/* A pending connection's socket reported events. */
void acceptor_event(struct server *srv, uint64_t data);
/* Hands over pending connections that waited too long, resumes accepting
 * after a pause; returns the next deadline. */
int64_t acceptor_tick(struct server *srv, int64_t now);
/* Closes the listening socket and pending connections (housekeeper stopped). */
void acceptor_stop(struct server *srv);

/* ---- housekeeper (housekeeper.c) ---- */
int housekeeper_start(struct server *srv);
/* Stops the thread; its epoll set stays open for the HTTP workers. */
void housekeeper_stop(struct server *srv);
/* Closes the epoll set and eventfd (every other thread stopped). */
void housekeeper_close(struct server *srv);
/* Makes the housekeeper recompute its deadline if `when` is sooner. */
void housekeeper_poke(struct server *srv, int64_t when);
/* Starts watching a connection's socket for the peer closing it. */
void housekeeper_watch(struct server *srv, struct conn_ctx *cc);
void housekeeper_unwatch(struct server *srv, struct conn_ctx *cc);
/* Adds or drops interest in cc's socket becoming writable (server.mu held). */
void housekeeper_want_write(struct server *srv, struct conn_ctx *cc, bool on);
/* One GC sweep; logs what it changed. */
void gc_tick(struct server *srv);

#endif
