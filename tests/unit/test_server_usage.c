/* Usage accounting: the scanner that reads a backend's "usage" (OpenAI,
 * the Responses API, Anthropic, streamed or whole; never a key inside a
 * string; a final body read from its tail), and the in-memory table:
 * counts per UTC day (fake clock across midnight), owner and Llm, errors
 * by status, flushed in batches and kept when a flush fails. */
#include "clock.h"
#include "db.h"
#include "db_fixture.h"
#include "db_internal.h"
#include "usage.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* ---- the scanner ---- */

#define NONE (-1)

static const struct {
    const char *name;
    const char *text;
    int64_t prompt, completion; /* NONE: not found */
} scan_cases[] = {
    {"openai chat",
     "{\"id\":\"c\",\"choices\":[{\"index\":0,\"message\":{\"content\":\"hi\"}}],"
     "\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":34,\"total_tokens\":46}}",
     12, 34},
    {"openai, spaces and details",
     "{\"usage\" : { \"prompt_tokens\" : 7 , \"completion_tokens\":3,"
     "\"prompt_tokens_details\":{\"cached_tokens\":5}} }",
     7, 3},
    {"embeddings: prompt only", "{\"data\":[],\"usage\":{\"prompt_tokens\":2,\"total_tokens\":2}}",
     2, NONE},
    {"responses api",
     "{\"output\":[{\"type\":\"message\"}],\"usage\":{\"input_tokens\":5,"
     "\"input_tokens_details\":{\"cached_tokens\":0},\"output_tokens\":7,"
     "\"output_tokens_details\":{\"reasoning_tokens\":0},\"total_tokens\":12},\"user\":null}",
     5, 7},
    {"responses api stream: response.completed",
     "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"usage\":null}}"
     "\n\nevent: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{"
     "\"status\":\"completed\",\"usage\":{\"input_tokens\":9,\"output_tokens\":4}}}\n\n",
     9, 4},
    {"anthropic message",
     "{\"type\":\"message\",\"content\":[{\"type\":\"text\",\"text\":\"hi\"}],\"usage\":{"
     "\"input_tokens\":21,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,"
     "\"output_tokens\":8}}",
     21, 8},
    {"anthropic stream: message_delta replaces message_start's output",
     "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{"
     "\"input_tokens\":10,\"output_tokens\":1}}}\n\n"
     "event: content_block_delta\ndata: {\"delta\":{\"text\":\"x\"}}\n\n"
     "event: message_delta\ndata: "
     "{\"type\":\"message_delta\",\"usage\":{\"output_tokens\":25}}\n\n",
     10, 25},
    {"openai chunk before the last: usage null", "{\"choices\":[{\"delta\":{}}],\"usage\":null}",
     NONE, NONE},
    {"inside a string",
     "{\"choices\":[{\"message\":{\"content\":\"say \\\"usage\\\": {\\\"prompt_tokens\\\": "
     "99}\"}}]}",
     NONE, NONE},
    {"after a string ending in a backslash",
     "{\"content\":\"a\\\\\",\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":2}}", 4, 2},
    {"usage as a value", "{\"type\":\"usage\",\"n\":{\"prompt_tokens\":1}}", NONE, NONE},
    {"not an object", "{\"usage\":[1,2]}", NONE, NONE},
    {"cut off", "{\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":", NONE, NONE},
    {"not whole numbers",
     "{\"usage\":{\"prompt_tokens\":-3,\"completion_tokens\":2.5,\"total_tokens\":1}}", NONE, NONE},
    {"strings are not counts", "{\"usage\":{\"prompt_tokens\":\"3\"}}", NONE, NONE},
    {"braces in a string of the object",
     "{\"usage\":{\"note\":\"}{\",\"prompt_tokens\":6,\"completion_tokens\":1}}", 6, 1},
    {"nothing", "data: {\"choices\":[{\"delta\":{\"content\":\"usage\"}}]}\n\n", NONE, NONE},
};

static void test_scan_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof scan_cases / sizeof scan_cases[0]; i++) {
        struct broker_usage u = {0};
        usage_scan(scan_cases[i].text, strlen(scan_cases[i].text), &u);
        int64_t p = u.has_prompt ? u.prompt : NONE, c = u.has_completion ? u.completion : NONE;
        if (p != scan_cases[i].prompt || c != scan_cases[i].completion)
            fail_msg("%s: got prompt %lld completion %lld, want %lld %lld", scan_cases[i].name,
                     (long long)p, (long long)c, (long long)scan_cases[i].prompt,
                     (long long)scan_cases[i].completion);
    }
    struct broker_usage u = {0};
    usage_scan(NULL, 0, &u);
    assert_false(u.has_prompt || u.has_completion);
}

/* A final body is read from its last USAGE_TAIL bytes; streamed pieces
 * whole; errors not at all. */
static void test_scan_piece(void **state)
{
    (void)state;
    static const char usage[] = "\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}";
    size_t pad = USAGE_TAIL + 100;
    char *body = malloc(pad + sizeof usage + 32);
    /* usage first, then a long array: outside the tail */
    int n = sprintf(body, "{%s,\"x\":\"", usage);
    memset(body + n, 'a', pad);
    strcpy(body + n + pad, "\"}");
    struct broker_piece p = {.kind = PIECE_FINAL, .data = body, .len = strlen(body)};
    usage_scan_piece(&p);
    assert_false(p.usage.has_prompt);
    /* the same piece streamed is read whole */
    p = (struct broker_piece){.kind = PIECE_EVENTS, .data = body, .len = strlen(body)};
    usage_scan_piece(&p);
    assert_true(p.usage.has_prompt);
    assert_int_equal(p.usage.completion, 2);
    /* usage last: in the tail */
    n = sprintf(body, "{\"x\":\"");
    memset(body + n, 'a', pad);
    sprintf(body + n + pad, "\",%s}", usage);
    p = (struct broker_piece){.kind = PIECE_FINAL, .data = body, .len = strlen(body)};
    usage_scan_piece(&p);
    assert_true(p.usage.has_prompt && p.usage.has_completion);
    assert_int_equal(p.usage.prompt, 1);
    free(body);

    static const char chunk[] = "{\"choices\":[],\"usage\":{\"prompt_tokens\":8}}";
    p = (struct broker_piece){.kind = PIECE_CHUNK, .data = chunk, .len = sizeof chunk - 1};
    usage_scan_piece(&p);
    assert_int_equal(p.usage.prompt, 8);
    p = (struct broker_piece){.kind = PIECE_ERROR, .data = chunk, .len = sizeof chunk - 1};
    usage_scan_piece(&p);
    assert_false(p.usage.has_prompt);
    p = (struct broker_piece){.kind = PIECE_EVENTS_END};
    usage_scan_piece(&p);
    assert_false(p.usage.has_prompt);
}

/* ---- the table ---- */

#define DAY_MS (86400LL * 1000)
#define D0 (20429LL * DAY_MS) /* 2025-12-07T00:00:00Z */

struct fx {
    struct db_fixture *d;
    struct usage *u;
    int64_t now;
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    *state = f;
    if (!f || !(f->d = db_fixture_open("server-usage")))
        return -1;
    f->u = usage_new(f->d->db);
    f->now = D0;
    clock_set_fake(&f->now);
    return f->u ? 0 : -1;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    clock_set_fake(NULL);
    usage_free(f->u);
    db_fixture_close(f->d);
    free(f);
    return 0;
}

static const char *stored(struct fx *f)
{
    return db_fixture_usage_text(f->d->db, NULL);
}

static void test_counts_per_day_owner_and_llm(void **state)
{
    struct fx *f = *state;
    f->now = D0 + DAY_MS - 1; /* the last millisecond of 2025-12-07 */
    usage_note(f->u, "alice", "m1", 200, 10, 5);
    usage_note(f->u, "alice", "m1", 502, -1, -1);
    usage_note(f->u, "alice", "m2", 499, 3, 0);
    f->now = D0 + DAY_MS; /* midnight: the next day */
    usage_note(f->u, "alice", "m1", 200, 1, 1);
    usage_note(f->u, "bob", "m1", 429, 0, 0);
    assert_string_equal(stored(f), ""); /* nothing written before a flush */
    assert_int_equal(usage_flush(f->u), DB_OK);
    assert_string_equal(stored(f), "2025-12-07 alice m1 2 1 10 5\n"
                                   "2025-12-07 alice m2 1 1 3 0\n"
                                   "2025-12-08 alice m1 1 0 1 1\n"
                                   "2025-12-08 bob m1 1 1 0 0\n");
    /* A flush with nothing new changes nothing; the next one adds. */
    assert_int_equal(usage_flush(f->u), DB_OK);
    usage_note(f->u, "bob", "m1", 200, 100, 50);
    assert_int_equal(usage_flush(f->u), DB_OK);
    assert_string_equal(stored(f), "2025-12-07 alice m1 2 1 10 5\n"
                                   "2025-12-07 alice m2 1 1 3 0\n"
                                   "2025-12-08 alice m1 1 0 1 1\n"
                                   "2025-12-08 bob m1 2 1 100 50\n");
}

/* A flush the database refuses loses nothing: the counts wait for the
 * next one, together with those noted meanwhile. */
static void test_failed_flush_keeps_the_counts(void **state)
{
    struct fx *f = *state;
    usage_note(f->u, "alice", "m1", 200, 10, 5);
    assert_int_equal(db_exec(f->d->db, "PRAGMA query_only = 1"), DB_OK);
    assert_int_equal(usage_flush(f->u), DB_ERROR);
    usage_note(f->u, "alice", "m1", 200, 1, 1);
    usage_note(f->u, "carol", "m3", 200, 2, 2);
    assert_int_equal(usage_flush(f->u), DB_ERROR);
    assert_int_equal(db_exec(f->d->db, "PRAGMA query_only = 0"), DB_OK);
    assert_int_equal(usage_flush(f->u), DB_OK);
    assert_string_equal(stored(f), "2025-12-07 alice m1 2 0 11 6\n"
                                   "2025-12-07 carol m3 1 0 2 2\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scan_table),
        cmocka_unit_test(test_scan_piece),
        cmocka_unit_test_setup_teardown(test_counts_per_day_owner_and_llm, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_flush_keeps_the_counts, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
