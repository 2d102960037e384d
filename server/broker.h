/*
 * broker.h - the relay's state and its rules: provider sessions and their
 * control streams' outgoing queues, tasks, the callers waiting on them,
 * wakes of hibernating Llms, and the tombstones of finished tasks.
 *
 * Owns everything above. Does no I/O, reads no clock (time is passed in as
 * monotonic milliseconds), touches no database and takes no lock but its
 * own: every function may be called from any thread.
 *
 * The I/O side is an endpoint (struct broker_ep) per HTTP response the
 * broker feeds: a control stream's body, or a waiting caller's answer. A
 * reader that finds nothing to send parks its endpoint: ep->park runs with
 * the broker's lock held, so nothing can be queued between "empty" and
 * "parked". Whoever then makes work for a parked endpoint unparks it and
 * calls ep->wake once the lock is released. Exactly one party unparks, so
 * each park is matched by at most one wake, and a parked endpoint stays
 * valid until that wake has run.
 *
 * Pools: a call may name a pool instead of one Llm. The broker then picks
 * the member, under its lock, from what only it knows at that instant —
 * which publishers have a stream bound and how many tasks each has in
 * flight — and fails a task over to another member once when it fails on
 * the publisher's side before the caller got its first byte. The pool's
 * members come from the database through broker_pool_set(), tagged with
 * the database's route generation.
 *
 * The seam toward streams is one pair of calls: broker_dispatch() sends a
 * frame to a session's stream, broker_deliver() hands a piece of a result
 * to a task. A multi-replica mcpd routes these two between replicas.
 */
#ifndef MCPD_BROKER_H
#define MCPD_BROKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define BROKER_ID_LEN 33 /* session and task ids: 32 hex digits + NUL */
#define BROKER_OWNER_MAX 128
#define BROKER_NAME_MAX 101
#define BROKER_HASH_LEN 65 /* a token's SHA-256 in hex + NUL */

/* Publisher features (the register body's "features"). */
#define BROKER_FEAT_PATHS 1u    /* "paths": infer tasks for any route */
#define BROKER_FEAT_STREAMED 2u /* "streamed-results": one streamed result post */

/* An HTTP response fed by the broker; embedded in the HTTP layer's request. */
struct broker_ep {
    /* Broker lock held; the reader found nothing to send. Suspend the
     * response and return true, or return false when the endpoint cannot
     * wait (its peer is gone, the server stops): the read then reports
     * BROKER_GONE. Must not call the broker. */
    bool (*park)(struct broker_ep *ep);
    /* Lock released; there is something to read: resume the response. */
    void (*wake)(struct broker_ep *ep);
    /* The broker's own */
    bool parked;
    struct broker_ep *next_wake;
};

/* How a wake ended (broker_config.on_wake_end). */
enum broker_wake_outcome {
    BROKER_WAKE_GONE,     /* the publisher's stream closed or was cut first */
    BROKER_WAKE_OK,       /* a 2xx status: the Llm is active */
    BROKER_WAKE_ERROR,    /* {error}, or a status that is not 2xx */
    BROKER_WAKE_TIMEOUT,  /* nothing within the wake timeout */
    BROKER_WAKE_SHUTDOWN, /* the server stopped */
    BROKER_WAKE_OUTCOMES
};

struct broker_config {
    int64_t infer_timeout_ms;      /* whole inference */
    int64_t idle_timeout_ms;       /* silence between pieces of a streaming result */
    int64_t wake_timeout_ms;       /* a wake task */
    int64_t ping_interval_ms;      /* ": ping" on every stream */
    int64_t heartbeat_interval_ms; /* told to publishers in hello */
    int max_inflight;              /* tasks in flight per session */
    int max_held;                  /* callers held per Llm while it wakes */
    size_t max_frame;              /* a task frame (the caller's body and envelope) */
    size_t stream_backlog;         /* bytes a stream may fall behind before it is cut off */
    size_t caller_backlog;         /* bytes a streaming caller may fall behind */
    size_t max_result;             /* a final result's body */
    bool result_stream;            /* offer result streams (hello's "features") */
    /* Told when a wake ends, with how long it took; runs with the
     * broker's lock held and must not call the broker. May be NULL. */
    void (*on_wake_end)(void *ud, enum broker_wake_outcome outcome, int64_t duration_ms);
    void *observer; /* on_wake_end's ud */
};

/* Read results besides a byte count. */
enum {
    BROKER_PARKED = 0,    /* nothing yet; the endpoint is parked */
    BROKER_END = -1,      /* the body is complete */
    BROKER_GONE = -2,     /* abort the response */
    BROKER_OVERFLOW = -3, /* abort: the stream fell too far behind */
};

/* Why a call could not start, or how it failed: the HTTP status, a
 * message for the error body and, for 503, Retry-After in seconds. */
struct broker_error {
    int status;
    int retry_after;
    const char *code; /* OpenAI error code, or NULL */
    char msg[256];
};

/* Token counts a backend reported in its "usage", as far as one piece of
 * its answer says: a count the piece does not have is left unset. */
struct broker_usage {
    int64_t prompt;
    int64_t completion;
    bool has_prompt;
    bool has_completion;
};

struct broker;
struct broker_stream;
struct broker_call;

/* Returns a new broker, or NULL when out of memory. */
struct broker *broker_new(const struct broker_config *cfg);
/* Frees everything; no endpoint may be in use. NULL is a no-op. */
void broker_free(struct broker *b);

/* ---- sessions and their control streams ---- */

/* A register call succeeded for session sid of owner: remembers its
 * features for the tasks to come. */
int broker_session_registered(struct broker *b, const char *sid, const char *owner,
                              unsigned features, int64_t now);

/* Binds a new control stream to sid and queues its hello; the stream bound
 * before is ended and its tasks fail. token_hash names the token that
 * opened it (broker_revoke()). Returns the stream, or NULL when out of
 * memory. The HTTP layer owns it until broker_stream_closed(). */
struct broker_stream *broker_stream_open(struct broker *b, const char *sid, const char *owner,
                                         const char *token_hash, struct broker_ep *ep, int64_t now);

/* The stream's body: copies up to max bytes to out and returns how many,
 * or BROKER_PARKED, BROKER_END, BROKER_GONE or BROKER_OVERFLOW (the
 * publisher did not read and its backlog passed the cap). */
ssize_t broker_stream_read(struct broker *b, struct broker_stream *st, char *out, size_t max);

/* The stream's response is over; st is freed. Returns true, with the
 * session id in sid, when the session's rows must now go inactive: st was
 * the session's current stream (or was cut off by broker_revoke() or
 * broker_session_expire()), not one a newer stream replaced. The tasks of
 * a current stream fail. */
bool broker_stream_closed(struct broker *b, struct broker_stream *st, char sid[BROKER_ID_LEN]);

/* Whether sid has a bound stream. */
bool broker_session_live(struct broker *b, const char *sid);

/* The session's rows were found stale: its stream ends and its tasks fail
 * with 502 at once. */
void broker_session_expire(struct broker *b, const char *sid, const char *why);

/* A result stream (one long post of a session's results) opens: 200 with
 * serial set to the session's current control stream, 404 when result
 * streams are off or sid is not a session of owner, 409 when no control
 * stream is bound. */
int broker_results_open(struct broker *b, const char *sid, const char *owner, uint64_t *serial);
/* The result stream opened with serial broke off: results it carried may
 * be lost, so the control stream it belongs to ends and its tasks fail
 * with 502, unless a newer stream has replaced it. */
void broker_results_cut(struct broker *b, const char *sid, uint64_t serial, const char *why);

/* The token was revoked or expired: every stream it opened ends and the
 * tasks sent down them fail. Returns how many streams were ended. */
int broker_revoke(struct broker *b, const char *token_hash);

/* The seam: queues frame on the session's stream. 0, or -1 when no stream
 * is bound or it is too far behind (then it is cut off). */
int broker_dispatch(struct broker *b, const char *sid, const char *frame, size_t len);

/* The endpoint's peer went away: wakes it if it is parked, so that its
 * reader runs and notices. */
void broker_kick(struct broker *b, struct broker_ep *ep);

/* ---- pools ---- */

/* A member of a pool as the database has it: a virtual row that is not
 * inactive. */
struct broker_member {
    const char *llm;     /* the row's name */
    const char *session; /* its publisher's session */
    bool hibernating;    /* registered asleep: woken before its first task */
};

/* Records pool's members as the database had them at route generation gen
 * (db_route_generation() read before the rows), sorted by name. A record of
 * the same or a newer generation is kept as it is. Each member's counts
 * (broker_pool_stats()) carry over from the record it replaces. 0, or -1
 * when out of memory. */
int broker_pool_set(struct broker *b, const char *pool, uint64_t gen, const struct broker_member *m,
                    size_t n);

/* Counts of one pool member, for metrics. */
struct broker_member_stats {
    const char *pool; /* valid during the callback */
    const char *llm;
    uint64_t requests;  /* tasks sent to it for calls that named its pool */
    uint64_t failovers; /* of those, how many failed on it and went to another member */
    int inflight;       /* its publisher's tasks in flight now (any Llm) */
    bool connected;     /* its publisher has a stream bound */
    bool hibernating;
};

/* Calls fn for every member of every pool the broker has routed to, with
 * the broker's lock held: fn must not call the broker. */
void broker_pool_stats(struct broker *b, void (*fn)(void *ud, const struct broker_member_stats *m),
                       void *ud);

/* ---- callers ---- */

struct broker_call_req {
    const char *llm;     /* the Llm's name (with pool: the name the caller used) */
    const char *session; /* its publisher's session (unused with pool) */
    bool hibernating;    /* wake it first (unused with pool) */
    const char *pool;    /* a pool: any member able to take the call may serve it */
    uint64_t pool_gen;   /* with pool: the route generation the caller's route was read at */
    unsigned needs;      /* BROKER_FEAT_* the task needs of its publisher */
    bool streaming;      /* the caller asked for a stream */
    bool anthropic;      /* error events in Anthropic's shape, not OpenAI's */
    const char *path;    /* the route under the provider's URL; NULL: chat completions */
    const char *body;    /* the caller's JSON body, spliced into the task frame */
    size_t body_len;
};

/* Starts a call: sends an infer task (or joins or starts a wake) and parks
 * ep. Returns the call, owned by the HTTP layer until broker_call_done(),
 * or NULL with err filled (503 offline or busy, 400 feature missing...).
 * With rq->pool, NULL with err->status 0 means the broker has no record of
 * the pool at rq->pool_gen or newer: broker_pool_set() it and start again.
 *
 * A pool call goes to a connected, active member whose publisher has the
 * features it needs and fewer than max_inflight tasks in flight: the one
 * with the fewest, the first after the pool's rotating cursor among equals.
 * Only when no such member is active (busy or not) is a hibernating one
 * woken, one wake per pool at a time. Its task failing on the publisher's
 * side (an error post, an invalid status, its stream closing or cut off, a
 * streamed post broken off) before the caller's answer began sends it to
 * another member, once; timeouts and the backend's own answers, 5xx
 * included, are never retried. */
struct broker_call *broker_call_start(struct broker *b, const struct broker_call_req *rq,
                                      struct broker_ep *ep, int64_t now, struct broker_error *err);

/* How the caller's response starts. */
struct broker_head {
    int status;
    bool sse;   /* an event stream follows through broker_call_read() */
    char *body; /* !sse: the whole body, the caller frees it */
    size_t len;
    char *headers; /* "name\0value\0" pairs to add, len headers_len; caller frees */
    size_t headers_len;
    const char *ctype; /* !sse: Content-Type, valid until broker_call_done() */
};

/* 1 with h filled, 0 when parked, -1 with err filled (reply with an error),
 * or BROKER_GONE. */
int broker_call_head(struct broker *b, struct broker_call *c, struct broker_head *h,
                     struct broker_error *err);

/* The event stream after an sse head: bytes, or BROKER_PARKED, BROKER_END,
 * BROKER_GONE. */
ssize_t broker_call_read(struct broker *b, struct broker_call *c, char *out, size_t max);

/* How a call went, for the usage accounting. */
struct broker_call_summary {
    char llm[BROKER_NAME_MAX]; /* the name the call was made for */
    /* The status the caller got: the answer's, or the failure's (a stream
     * that ended with an error event included); 499 when the caller went
     * away before its answer was complete. */
    int status;
    struct broker_usage usage; /* the last count of each kind the backend reported */
};

/* Fills out for c, which is still the HTTP layer's. */
void broker_call_summary(struct broker *b, struct broker_call *c, struct broker_call_summary *out);

/* The caller's request is over; c is freed. A task still running is
 * cancelled (a cancel frame goes to its publisher). */
void broker_call_done(struct broker *b, struct broker_call *c);
/* The same, with how the call went in out, under one lock. */
void broker_call_finish(struct broker *b, struct broker_call *c, struct broker_call_summary *out);

/* ---- results from publishers ---- */

enum broker_piece_kind {
    PIECE_FINAL,      /* status, headers, body */
    PIECE_CHUNK,      /* one event's data (per-chunk posts); done ends the stream */
    PIECE_ERROR,      /* the publisher reports a failure */
    PIECE_EVENTS,     /* whole events of a streamed result post, verbatim */
    PIECE_EVENTS_END, /* the streamed post's body ended cleanly */
    PIECE_EVENTS_CUT, /* the streamed post broke off */
};

struct broker_piece {
    enum broker_piece_kind kind;
    int status;          /* FINAL */
    const char *headers; /* FINAL: "name\0value\0" pairs, may be NULL */
    size_t headers_len;
    const char *ctype; /* FINAL: static Content-Type of data */
    const char *data;  /* FINAL body, CHUNK data, EVENTS bytes, ERROR message */
    size_t len;
    bool done;                 /* CHUNK */
    struct broker_usage usage; /* counts this piece carries; a later count replaces an earlier */
};

/* What the route handler must make durable after a delivery. */
struct broker_outcome {
    char woke[BROKER_NAME_MAX]; /* an Llm whose wake succeeded, or "" */
};

/* Hands a piece to task task_id, posted on session sid by owner. Returns
 * the status for the publisher: 200, 400 (the piece does not fit the task;
 * msg says why), 404 (no such task for this session and owner) or 410
 * (the task is finished, cancelled or timed out). */
int broker_deliver(struct broker *b, const char *sid, const char *owner, const char *task_id,
                   const struct broker_piece *p, int64_t now, struct broker_outcome *out, char *msg,
                   size_t msglen);

/* ---- time and shutdown ---- */

/* Pings due streams, times tasks and wakes out, expires tombstones and
 * idle session records. Returns the next time it has work (monotonic ms). */
int64_t broker_tick(struct broker *b, int64_t now);

/* Every waiting caller fails with 503 and every stream ends. */
void broker_shutdown(struct broker *b);

/* Counts, for logs and tests. */
struct broker_stats {
    unsigned sessions, streams, tasks, calls, wakes, tombstones;
    unsigned overflows;     /* streams cut off for their backlog, ever */
    unsigned live_sessions; /* sessions with a stream bound */
    unsigned held;          /* callers held for wakes */
};
void broker_stats(struct broker *b, struct broker_stats *out);

#endif
