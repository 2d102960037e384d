/*
 * chat.h - conversations with an Llm through mcpd's infer route.
 *
 * A struct chat keeps the history (system prompt, then alternating user and
 * assistant messages) and the sampling options. chat_turn() sends the
 * history plus one new user message and writes the answer to a stream:
 * streamed answers are written token by token as the "data:" chunks of the
 * event stream arrive (choices[0].delta.content, up to "data: [DONE]"); with
 * streaming off the whole choices[0].message.content is written at once.
 * Only a successful exchange enters the history, so a failed turn can simply
 * be sent again.
 */
#ifndef MCPCTL_CHAT_H
#define MCPCTL_CHAT_H

#include "api.h"
#include "buf.h"
#include "errors.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>

#define CHAT_ANSWER_MAX (16u * 1024 * 1024)

struct chat_opts {
    const char *system; /* system prompt or NULL; copied by chat_init() */
    bool stream;
    bool has_temperature;
    double temperature;
    bool has_max_tokens;
    long max_tokens;
};

struct chat {
    json_t *messages; /* the history, owned */
    struct chat_opts opts;
};

/* Starts an empty conversation. Returns 0, or -1 (CLI_EXIT_USAGE when the
 * system prompt is not valid UTF-8, CLI_EXIT_ERROR when out of memory). */
int chat_init(struct chat *c, const struct chat_opts *opts, struct cli_error *err);
/* Frees the history. */
void chat_release(struct chat *c);
/* Number of messages in the history, the system prompt included. */
size_t chat_history_len(const struct chat *c);

/* Returns a new string (caller frees) with the request for the history plus
 * user_msg: {"messages": [...], "stream": ..., "temperature"?, "max_tokens"?}.
 * NULL when user_msg is not valid UTF-8 or memory ran out. */
char *chat_request_body(const struct chat *c, const char *user_msg);

/* Sends user_msg to Llm llm and writes the answer to out, ending with a
 * newline. On success the exchange is added to the history. Returns 0 or -1
 * (err says why; the history is unchanged). */
int chat_turn(struct chat *c, struct api *a, const char *llm, const char *user_msg, FILE *out,
              struct cli_error *err);

/* State of one streamed answer; exposed so the event handling is testable
 * without a server. */
struct chat_stream {
    FILE *out;
    const char *llm;
    struct buf answer; /* the text so far */
    bool done;         /* "data: [DONE]" arrived */
};

void chat_stream_init(struct chat_stream *s, FILE *out, const char *llm);
void chat_stream_release(struct chat_stream *s);
/* Handles one event of the stream (api_event_fn). Returns 0, or 1 with err
 * filled: CLI_EXIT_INFER for an "error" event or an error chunk,
 * CLI_EXIT_ERROR for a chunk that is not JSON. */
int chat_stream_event(void *ud, const struct sse_event *ev, struct cli_error *err);

/* The text of a non-streamed answer: choices[0].message.content (borrowed
 * from answer), or NULL when it has none. */
const char *chat_answer_text(const json_t *answer);

#endif
