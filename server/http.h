/*
 * http.h - libmicrohttpd glue: the daemon, one context per request, the
 * checks every request passes before its body is read (framing, token,
 * route, size), replies, and the broker endpoints that suspend and resume
 * a request.
 *
 * Every function here runs on a libmicrohttpd worker, in the callbacks of
 * the request it is given, unless it says otherwise.
 */
#ifndef MCPD_HTTP_H
#define MCPD_HTTP_H

#include "accesslog.h"
#include "auth.h"
#include "broker.h"
#include "buf.h"
#include "jsonsplit.h"
#include "metrics.h"
#include "protocol.h"
#include "server.h"

#include <microhttpd.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <uthash.h>

/* The routes. */
enum route {
    R_NONE,
    R_HEALTHZ,
    R_READYZ,
    R_LIST,
    R_GET,
    R_MEMBERS, /* GET /api/v1/llms/:name/members */
    R_REGISTER,
    R_STREAM,
    R_HEARTBEAT,
    R_RESULT,
    R_RESULTS, /* a session's result stream */
    R_INFER,
    R_OPENAI_CHAT,
    R_OPENAI_MODELS,
    R_OPENAI_MODEL,       /* GET /v1/models/{id} */
    R_USAGE,              /* GET /api/v1/usage */
    R_OPENAI_COMPLETIONS, /* the relayed /v1 routes besides chat: */
    R_OPENAI_EMBEDDINGS,
    R_OPENAI_RESPONSES,
    R_ANTHROPIC_MESSAGES,
    R_PREFLIGHT, /* OPTIONS on /v1: a CORS preflight */
    R_METRICS,
    R_COUNT
};

/* Each route as a metrics label (its path template), indexed by route. */
extern const struct metrics_route http_routes[R_COUNT];

/* A request path matched against the routes. */
struct route_match {
    enum route route;
    const char *method;       /* the one method the route takes */
    char param[MCP_NAME_BUF]; /* a name (<= 100 chars) or a task id */
    bool bad_param;           /* path shape matched but the parameter is malformed */
};

/* One TCP connection, as the housekeeper watches it. */
struct conn {
    uint64_t id;
    int fd;
    atomic_bool peer_gone; /* the peer closed its side */
    char remote[64];       /* the peer's "addr:port", for the access log */
    struct req *req;       /* the request in progress */
    UT_hash_handle hh;     /* in server.conns; this and req under watch_mu */
};

/* One HTTP request (libmicrohttpd's per-request context). */
struct req {
    struct broker_ep ep; /* while the broker feeds this request's answer */
    struct server *srv;
    struct MHD_Connection *conn;
    struct conn *cc;
    enum route route;
    char param[MCP_NAME_BUF];
    bool openai;    /* error bodies in OpenAI's shape */
    bool anthropic; /* ... or in Anthropic's (/v1/messages) */
    bool started;   /* the route ran (or the request was refused) */
    char owner[DB_OWNER_MAX];
    char token_hash[AUTH_HASH_LEN];
    struct buf body;
    /* The relay: a call waiting for its answer. */
    struct broker_call *call;
    /* A control stream. */
    struct broker_stream *stream;
    /* A streamed result post: events pass through as they arrive. */
    atomic_bool events;      /* set once the post is accepted */
    atomic_bool events_over; /* ended, cut or refused: reported once */
    struct buf partial;      /* the bytes of an event (or result) not yet complete */
    char session[DB_SESSION_ID_LEN];
    /* A result stream: the session's results, one JSON object each. */
    atomic_bool results; /* set once the stream is accepted */
    uint64_t results_serial;
    struct jsonsplit split;
    /* What the access log and the metrics record (worker thread only). */
    int64_t start_us;                 /* the request's first callback (clock_mono_us) */
    int64_t first_byte_us;            /* the answer's first byte went out; 0: not yet */
    unsigned status;                  /* the status queued; 0: none */
    uint64_t bytes;                   /* body bytes handed to libmicrohttpd */
    MHD_ContentReaderCallback reader; /* a streamed body's reader (http_sse_response) */
    char llm[MCP_NAME_BUF];           /* the Llm a relayed request was routed to */
    char method[16];
    char path[ACCESSLOG_PATH_MAX + 2]; /* longer paths are cut here */
};

/* Listens on srv->cfg's address (srv->port gets the port bound), starts
 * the daemon (srv->mhd) and the thread that accepts connections and hands
 * them to it, refusing those past conn_limit open at once (fd_limit: what
 * the descriptors allow). NULL with the reason logged. */
struct MHD_Daemon *http_start(struct server *srv, unsigned int conn_limit, unsigned int fd_limit);
/* Stops accepting, then the daemon. */
void http_stop(struct server *srv);

/* Matches a path (no query string) against the routes. */
void http_match_route(const char *url, struct route_match *m);

/* Queues resp, a whole body of body_len bytes, or a streamed one from
 * http_sse_response() (body_len unused: its reader counts the bytes); the
 * access log and the metrics learn its status. */
enum MHD_Result http_queue(struct req *r, unsigned status, struct MHD_Response *resp,
                           size_t body_len);

/* Replies. Each queues a whole response on r's connection. */
enum MHD_Result http_reply_json(struct req *r, unsigned status, const char *json, size_t len);
enum MHD_Result http_reply_ok(struct req *r);
enum MHD_Result http_reply_error(struct req *r, unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* An error with a Retry-After (seconds, when > 0) and an OpenAI code. */
enum MHD_Result http_reply_failure(struct req *r, unsigned status, int retry_after,
                                   const char *code, const char *msg);
/* Adds the CORS headers a /v1 response gets for an allowed Origin. */
void http_add_cors(struct req *r, struct MHD_Response *resp);
/* Adds "name\0value\0" pairs to resp. */
void http_add_headers(struct MHD_Response *resp, const char *pairs, size_t len);
/* A text/event-stream response whose body reader gets r; queue it with
 * http_queue_stream(). */
struct MHD_Response *http_sse_response(MHD_ContentReaderCallback reader, struct req *r);

/* The request's provider-session header, or NULL. */
const char *http_session_header(struct req *r);

/* r has just become a streamed upload (its events or results flag is
 * set): makes sure a close of its peer is seen. */
void http_upload_started(struct req *r);

/* The housekeeper's side (its thread): a watched connection's peer went
 * away; wakes the request waiting on it. For a streamed result post or a
 * result stream it
 * returns true: call again with final set a little later, once what came
 * with the close has been read. */
bool http_peer_gone(struct server *srv, uint64_t conn_id, bool final);

#endif
