/*
 * usage_support.h - helpers for the usage accounting's tests: the token
 * counts a relayed answer carries, read with jansson on the caller's side,
 * and GET /api/v1/usage summed up.
 *
 * Exported names start with usage_t_.
 */
#ifndef TEST_USAGE_SUPPORT_H
#define TEST_USAGE_SUPPORT_H

#include "test_env.h"

#include <jansson.h>
#include <stdint.h>

struct usage_t_counts {
    int64_t requests, errors, prompt, completion;
};

/* Adds what an answer (a JSON body, or an event stream's data lines) says
 * of its tokens to c: the last prompt_tokens/input_tokens and
 * completion_tokens/output_tokens of its "usage" objects (top level, or in
 * "message" or "response"). Counts one request; an error when status >=
 * 400 or the stream has an error event. */
void usage_t_add_answer(struct usage_t_counts *c, long status, const char *body);

/* GET /api/v1/usage?query (query may be NULL) with token: the answer's
 * status in *status and its body parsed (NULL when it is not JSON). */
json_t *usage_t_get(struct test_env *env, const char *token, const char *query, long *status);

/* A call is counted a moment after its caller has the last byte (when
 * the request is over): polls usage_t_get() until the rows of owner and
 * llm (NULL: any) count at least requests, and returns that answer; fails
 * the running test after 10 s. */
json_t *usage_t_wait(struct test_env *env, const char *token, const char *query, const char *owner,
                     const char *llm, int64_t requests);

/* Sums the rows of a usage answer that match owner and llm (NULL: any),
 * over every day. */
struct usage_t_counts usage_t_sum(const json_t *answer, const char *owner, const char *llm);

/* Fails the running test unless got equals want, saying what differs. */
void usage_t_expect(const char *what, struct usage_t_counts got, struct usage_t_counts want);

#endif
