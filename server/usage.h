/*
 * usage.h - usage accounting: per UTC day, caller's owner and Llm, the
 * requests relayed, those that failed, and the prompt and completion
 * tokens the backends reported.
 *
 * Two halves, both off the relay's hot path as far as they can be:
 *
 * - Reading the counts: usage_scan_piece() looks at each piece of a result
 *   a publisher posts (a final body, a chunk, a run of streamed events) for
 *   the backend's "usage" object, with a memmem() and, only where one is
 *   found, a scan of that object (jsonscan). Final bodies are read from
 *   their last USAGE_TAIL bytes, where every API puts it. The broker keeps
 *   the latest count of each kind per call.
 * - Adding them up: usage_note(), once per relayed call when it ends,
 *   adds to an in-memory table under the table's own lock; usage_flush()
 *   writes the table to the database in one transaction and empties it. The
 *   housekeeper flushes every USAGE_FLUSH_EVERY_MS, mcpd at shutdown, and
 *   GET /api/v1/usage before it reads, so what it shows is never behind.
 *
 * Lock order: the flush lock, then the table's lock or the database's. No
 * other lock is held when either is taken.
 */
#ifndef MCPD_USAGE_H
#define MCPD_USAGE_H

#include "broker.h"
#include "db.h"

#include <stddef.h>
#include <stdint.h>

#define USAGE_FLUSH_EVERY_MS 2000
#define USAGE_TAIL (64 * 1024) /* a final body is read from its last bytes this long */

struct usage;

/* Returns a new, empty table writing to db (borrowed), or NULL. */
struct usage *usage_new(struct db *db);
/* Frees the table; counts not flushed are lost (call usage_flush() first).
 * NULL is a no-op. */
void usage_free(struct usage *u);

/* A relayed call of owner to llm ended with the HTTP status the caller got
 * (>= 400 counts as an error); prompt and completion are the tokens the
 * backend reported (negative: none). Counted on today's UTC day (mcpd's
 * clock). Any thread. */
void usage_note(struct usage *u, const char *owner, const char *llm, int status, int64_t prompt,
                int64_t completion);

/* Adds the table to the database in one transaction and empties it. On
 * failure the counts stay for the next flush. DB_OK or DB_ERROR. Any
 * thread. */
int usage_flush(struct usage *u);

/* Reads the token counts of a backend's "usage" objects in text: each
 * "usage" key whose value is an object holding prompt_tokens /
 * completion_tokens (OpenAI) or input_tokens / output_tokens (the
 * Responses API, Anthropic) sets the counts it has, later ones replacing
 * earlier ones (Anthropic's message_delta after its message_start). Keys
 * inside strings are never taken for one. */
void usage_scan(const char *text, size_t len, struct broker_usage *out);

/* Fills p->usage from the piece's data: a final body (its last USAGE_TAIL
 * bytes), a chunk's data or streamed events. Other pieces carry none. */
void usage_scan_piece(struct broker_piece *p);

#endif
