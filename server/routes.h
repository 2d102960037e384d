/*
 * routes.h - the route handlers: each turns a request into database reads
 * and writes or broker calls, and the outcome into a response.
 *
 * They run on a libmicrohttpd worker in the request's callbacks, once the
 * whole body is in r->body unless said otherwise.
 */
#ifndef MCPD_ROUTES_H
#define MCPD_ROUTES_H

#include "http.h"

/* ---- provider.c: registration, heartbeats, listings ---- */
enum MHD_Result provider_register(struct req *r);
enum MHD_Result provider_heartbeat(struct req *r);
enum MHD_Result provider_list(struct req *r);
enum MHD_Result provider_get(struct req *r, const char *name);
enum MHD_Result provider_models(struct req *r);
/* GET /v1/models/{id}: one Llm that is not inactive, or a pool with a live
 * member, as OpenAI's model. */
enum MHD_Result provider_model(struct req *r, const char *id);
/* GET /api/v1/llms/:name/members: the pool called name, or name's pool. */
enum MHD_Result provider_members(struct req *r, const char *name);

/* ---- stream.c: control streams ---- */
enum MHD_Result stream_open(struct req *r);
/* The stream's request is over (libmicrohttpd's completion callback). */
void stream_closed(struct req *r);

/* ---- relay.c: inference and results ---- */
enum MHD_Result relay_infer(struct req *r, const char *name);
enum MHD_Result relay_openai_chat(struct req *r);
/* /v1/completions, /v1/embeddings, /v1/responses and /v1/messages: a task
 * whose "path" is the route under the provider's URL. */
enum MHD_Result relay_openai_route(struct req *r);
/* The caller's request was resumed: its answer (or its failure) is ready. */
enum MHD_Result relay_resume(struct req *r);
/* The caller's request is over. */
void relay_done(struct req *r);
enum MHD_Result relay_result(struct req *r, const char *task_id);
/* A streamed result post (Content-Type: text/event-stream): begin is
 * called once the headers are in (it may refuse the post), piece for each
 * part of the body as it arrives (MHD_NO aborts the post), end once the
 * body is complete, and done when the request is over. */
enum MHD_Result relay_events_begin(struct req *r, const char *task_id, bool *replied);
enum MHD_Result relay_events_piece(struct req *r, const char *data, size_t len);
enum MHD_Result relay_events_end(struct req *r);
void relay_events_done(struct req *r);
/* The housekeeper's thread (watch lock held): the poster's side closed
 * before its body ended. libmicrohttpd 0.9.75 does not notice a close that
 * arrives with the last bytes of a chunked body until the connection
 * times out, so the task fails here, at once. */
void relay_events_peer_gone(struct req *r);

/* A result stream (POST _provider-results): begin once the headers are
 * in (it may refuse the stream), piece for each part of the body as it
 * arrives, end once the body is complete, done when the request is over,
 * peer_gone from the housekeeper's thread as for streamed result posts. A
 * stream that breaks off ends its control stream: results may be lost. */
enum MHD_Result relay_results_begin(struct req *r, bool *replied);
enum MHD_Result relay_results_piece(struct req *r, const char *data, size_t len);
enum MHD_Result relay_results_end(struct req *r);
void relay_results_done(struct req *r);
void relay_results_peer_gone(struct req *r);

/* ---- usage_route.c: GET /api/v1/usage ---- */
enum MHD_Result usage_route(struct req *r);

/* The routing cache: an Llm's kind, status and session, valid while the
 * database's route generation stands still (db_route_generation()). Any
 * thread. */
struct routes *routes_new(void);
void routes_free(struct routes *rt);
/* Fills out from the cache or the database: DB_OK, DB_NOT_FOUND, DB_ERROR.
 * gen (may be NULL) gets the route generation out is valid at. */
int routes_lookup(struct routes *rt, struct db *db, const char *name, struct llm_route *out,
                  uint64_t *gen);

#endif
