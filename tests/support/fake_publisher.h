/*
 * fake_publisher.h - a scriptable publisher for mcpd's tests.
 *
 * It speaks the provider protocol as mcplocal would: registers its
 * providers, holds the control stream (recording every byte it receives),
 * and answers `infer` and `wake` tasks as its script says — answer at once,
 * stream N chunks with a delay, report an error, stay silent, or drop the
 * stream mid-task. Each task runs in its own thread so many run at once.
 *
 * Non-streaming answers echo the last message's content so a test can match
 * every answer to its caller: {"choices":[{"message":{"content":"echo: X"}}]}.
 * Streamed chunk i carries delta content "tok<i> " ("echo: X tok<i> " with
 * echo_chunks).
 */
#ifndef TEST_FAKE_PUBLISHER_H
#define TEST_FAKE_PUBLISHER_H

enum fp_mode {
    FP_ANSWER,   /* final {status, body} (or chunks when the task streams) */
    FP_ERROR,    /* {"error": "backend exploded"} */
    FP_SILENT,   /* never answers */
    FP_DROP,     /* closes its control stream after drop_after chunks */
    FP_STATUS,   /* final {status: script.status, body: {"error": ...}} */
    FP_RAW,      /* posts script.raw as the result, verbatim */
    FP_STREAMED, /* a streaming task's events in one streamed post (text/event-stream,
                  * chunked), delay_ms before each; cut_after > 0 breaks the post
                  * off after that many events */
};

struct fp_script {
    enum fp_mode mode;
    int chunks;     /* chunks per streaming answer (default 3) */
    int delay_ms;   /* before each chunk / before a final answer */
    int drop_after; /* FP_DROP: chunks sent before the drop */
    int status;     /* FP_STATUS */
    int wake_fail;  /* wake tasks: 1 answers {"error"}, 2 stays silent */
    int wake_delay_ms;
    int jitter_ms;   /* each delay_ms wait gets a random 0..jitter_ms more */
    int echo_chunks; /* streamed chunks carry the echo too */
    const char *raw; /* FP_RAW: the result body (kept by the caller) */
    int cut_after;   /* FP_STREAMED */
    /* Token counts the answers report as OpenAI's "usage" when either is
     * set: in a whole answer's body, in a chunk of its own ("choices": [])
     * after the last delta of per-chunk posts, or as the event before
     * [DONE] of a streamed post. */
    int prompt_tokens;
    int completion_tokens;
    /* FP_STREAMED: the post's body is these events verbatim (each with its
     * blank line; NULL-terminated, kept by the caller), delay_ms before
     * each, instead of the deltas and [DONE]. */
    const char *const *events;
};

struct fake_publisher;

/* Registers providers_json (a JSON array of ProviderInput) at base_url with
 * token, then opens the stream and waits for hello. session may be NULL.
 * Returns NULL (with a message on stderr) on failure. */
struct fake_publisher *fake_publisher_start(const char *base_url, const char *token,
                                            const char *providers_json, const char *session);
void fake_publisher_set_script(struct fake_publisher *fp, const struct fp_script *s);
/* The session id mcpd returned (borrowed). */
const char *fake_publisher_session(struct fake_publisher *fp);
/* Waits until the stream transcript holds count occurrences of needle. */
int fake_publisher_wait(struct fake_publisher *fp, const char *needle, int count, int timeout_ms);
/* Copy of the stream transcript so far; caller frees. */
char *fake_publisher_transcript(struct fake_publisher *fp);
/* The id of the task frame in which needle first occurs, as a new string;
 * NULL when no task frame holds it. */
char *fake_publisher_task_id(struct fake_publisher *fp, const char *needle);
/* Number of result posts answered with status code. */
int fake_publisher_posts_with_status(struct fake_publisher *fp, long code);
/* Waits until at least n result posts got status code. */
int fake_publisher_wait_posts(struct fake_publisher *fp, long code, int n, int timeout_ms);
/* Closes the control stream now (the publisher vanished). */
void fake_publisher_drop(struct fake_publisher *fp);
/* Posts body to the result route of task_id with this publisher's session;
 * returns the HTTP status. */
long fake_publisher_post_result(struct fake_publisher *fp, const char *task_id, const char *body);
/* Events sent so far in streamed result posts (FP_STREAMED). */
int fake_publisher_events_sent(struct fake_publisher *fp);
/* Status of the last streamed result post (0 until one ended). */
long fake_publisher_last_streamed_status(struct fake_publisher *fp);
/* Drops the stream, waits for task threads, frees everything. */
void fake_publisher_stop(struct fake_publisher *fp);

#endif
