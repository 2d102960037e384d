#include "usage_support.h"

#include "clock.h"

#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

/* Takes the counts of o's "usage" object, if it has one. */
static void take(const json_t *o, int64_t *prompt, int64_t *completion)
{
    const json_t *u = json_object_get(o, "usage");
    const char *const pk[] = {"prompt_tokens", "input_tokens"};
    const char *const ck[] = {"completion_tokens", "output_tokens"};
    for (int i = 0; json_is_object(u) && i < 2; i++) {
        if (json_is_integer(json_object_get(u, pk[i])))
            *prompt = json_integer_value(json_object_get(u, pk[i]));
        if (json_is_integer(json_object_get(u, ck[i])))
            *completion = json_integer_value(json_object_get(u, ck[i]));
    }
}

static void take_all(const json_t *o, int64_t *prompt, int64_t *completion)
{
    take(o, prompt, completion);
    take(json_object_get(o, "message"), prompt, completion);
    take(json_object_get(o, "response"), prompt, completion);
}

void usage_t_add_answer(struct usage_t_counts *c, long status, const char *body)
{
    int64_t prompt = 0, completion = 0;
    bool error = status >= 400;
    json_t *whole = json_loads(body, 0, NULL);
    if (whole) {
        take_all(whole, &prompt, &completion);
        json_decref(whole);
    } else {
        for (const char *line = body; line && *line;) {
            const char *nl = strchr(line, '\n');
            size_t len = nl ? (size_t)(nl - line) : strlen(line);
            if (len > 6 && strncmp(line, "data: ", 6) == 0) {
                json_t *o = json_loadb(line + 6, len - 6, 0, NULL);
                take_all(o, &prompt, &completion);
                json_decref(o);
            }
            if (len == 12 && strncmp(line, "event: error", 12) == 0)
                error = true;
            line = nl ? nl + 1 : NULL;
        }
    }
    c->requests++;
    c->errors += error;
    c->prompt += prompt;
    c->completion += completion;
}

json_t *usage_t_get(struct test_env *env, const char *token, const char *query, long *status)
{
    char path[1024];
    snprintf(path, sizeof path, "/api/v1/usage%s%s", query ? "?" : "", query ? query : "");
    struct http_resp r;
    test_call(env, "GET", path, token, NULL, NULL, &r);
    *status = r.status;
    json_t *j = json_loads(r.body, 0, NULL);
    http_resp_free(&r);
    return j;
}

json_t *usage_t_wait(struct test_env *env, const char *token, const char *query, const char *owner,
                     const char *llm, int64_t requests)
{
    int64_t deadline = clock_mono_ms() + 10000;
    for (;;) {
        long status;
        json_t *j = usage_t_get(env, token, query, &status);
        if (status == 200 && usage_t_sum(j, owner, llm).requests >= requests)
            return j;
        if (clock_mono_ms() > deadline)
            fail_msg("GET /api/v1/usage never counted %lld requests (status %ld)",
                     (long long)requests, status);
        json_decref(j);
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

struct usage_t_counts usage_t_sum(const json_t *answer, const char *owner, const char *llm)
{
    struct usage_t_counts c = {0};
    size_t i;
    const json_t *row;
    json_array_foreach(json_object_get(answer, "usage"), i, row)
    {
        const char *o = json_string_value(json_object_get(row, "owner"));
        const char *l = json_string_value(json_object_get(row, "llm"));
        if ((owner && (!o || strcmp(o, owner) != 0)) || (llm && (!l || strcmp(l, llm) != 0)))
            continue;
        c.requests += json_integer_value(json_object_get(row, "requests"));
        c.errors += json_integer_value(json_object_get(row, "errors"));
        c.prompt += json_integer_value(json_object_get(row, "promptTokens"));
        c.completion += json_integer_value(json_object_get(row, "completionTokens"));
    }
    return c;
}

void usage_t_expect(const char *what, struct usage_t_counts got, struct usage_t_counts want)
{
    if (got.requests != want.requests || got.errors != want.errors || got.prompt != want.prompt ||
        got.completion != want.completion)
        fail_msg("%s: requests %lld errors %lld prompt %lld completion %lld; want %lld %lld %lld "
                 "%lld",
                 what, (long long)got.requests, (long long)got.errors, (long long)got.prompt,
                 (long long)got.completion, (long long)want.requests, (long long)want.errors,
                 (long long)want.prompt, (long long)want.completion);
}
