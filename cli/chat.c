#include "chat.h"

#include <stdlib.h>
#include <string.h>

int chat_init(struct chat *c, const struct chat_opts *opts, struct cli_error *err)
{
    memset(c, 0, sizeof *c);
    c->opts = *opts;
    c->opts.system = NULL;
    c->messages = json_array();
    if (!c->messages)
        return cli_error_set(err, CLI_EXIT_ERROR, "out of memory");
    if (opts->system) {
        json_t *text = json_string(opts->system);
        if (!text) {
            chat_release(c);
            return cli_error_set(err, CLI_EXIT_USAGE, "the system prompt is not valid UTF-8");
        }
        json_t *msg = json_pack("{s:s,s:o}", "role", "system", "content", text);
        if (!msg || json_array_append_new(c->messages, msg) < 0) {
            chat_release(c);
            return cli_error_set(err, CLI_EXIT_ERROR, "out of memory");
        }
    }
    return 0;
}

void chat_release(struct chat *c)
{
    json_decref(c->messages);
    c->messages = NULL;
}

size_t chat_history_len(const struct chat *c)
{
    return json_array_size(c->messages);
}

static json_t *message(const char *role, const char *text, size_t len)
{
    json_t *content = json_stringn(text, len);
    if (!content)
        return NULL;
    return json_pack("{s:s,s:o}", "role", role, "content", content);
}

char *chat_request_body(const struct chat *c, const char *user_msg)
{
    char *out = NULL;
    json_t *req = NULL;
    json_t *msgs = json_copy(c->messages); /* shallow: the messages are shared */
    json_t *user = message("user", user_msg, strlen(user_msg));
    if (!msgs || !user)
        goto out;
    int appended = json_array_append_new(msgs, user);
    user = NULL; /* taken by the array, even on failure */
    if (appended < 0)
        goto out;
    req = json_pack("{s:O,s:b}", "messages", msgs, "stream", c->opts.stream);
    if (!req)
        goto out;
    if (c->opts.has_temperature &&
        json_object_set_new(req, "temperature", json_real(c->opts.temperature)) < 0)
        goto out;
    if (c->opts.has_max_tokens &&
        json_object_set_new(req, "max_tokens", json_integer(c->opts.max_tokens)) < 0)
        goto out;
    out = json_dumps(req, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15));
out:
    json_decref(user);
    json_decref(msgs);
    json_decref(req);
    return out;
}

/* ---- streamed answers ---- */

void chat_stream_init(struct chat_stream *s, FILE *out, const char *llm)
{
    memset(s, 0, sizeof *s);
    s->out = out;
    s->llm = llm;
    buf_init(&s->answer, CHAT_ANSWER_MAX);
}

void chat_stream_release(struct chat_stream *s)
{
    buf_release(&s->answer);
}

/* The reason in an {"error": "..."} or {"error": {"message": "..."}} value. */
static const char *error_reason(const json_t *e)
{
    const char *s = json_string_value(e);
    if (!s)
        s = json_string_value(json_object_get(e, "message"));
    return s ? s : "no reason given";
}

static bool is_done(const char *data)
{
    while (*data == ' ' || *data == '\t')
        data++;
    size_t n = strlen(data);
    while (n > 0 && (data[n - 1] == ' ' || data[n - 1] == '\t' || data[n - 1] == '\r'))
        n--;
    return n == 6 && strncmp(data, "[DONE]", 6) == 0;
}

int chat_stream_event(void *ud, const struct sse_event *ev, struct cli_error *err)
{
    struct chat_stream *s = ud;
    int rc = 1;
    json_t *chunk = NULL;
    if (strcmp(ev->event, "error") == 0) {
        chunk = json_loadb(ev->data, ev->data_len, 0, NULL);
        json_t *e = json_object_get(chunk, "error");
        cli_error_set(err, CLI_EXIT_INFER, "Llm '%s' failed during the answer: %s", s->llm,
                      e ? error_reason(e) : "no reason given");
        goto out;
    }
    if (strcmp(ev->event, "message") != 0 || ev->data_len == 0) {
        rc = 0; /* other events and keep-alives carry no text */
        goto out;
    }
    if (is_done(ev->data)) {
        s->done = true;
        rc = 0;
        goto out;
    }
    chunk = json_loadb(ev->data, ev->data_len, 0, NULL);
    if (!json_is_object(chunk)) {
        cli_error_set(err, CLI_EXIT_ERROR, "Llm '%s' sent a streamed piece that is not JSON",
                      s->llm);
        goto out;
    }
    json_t *e = json_object_get(chunk, "error");
    if (e && !json_is_null(e)) {
        cli_error_set(err, CLI_EXIT_INFER, "Llm '%s' failed during the answer: %s", s->llm,
                      error_reason(e));
        goto out;
    }
    json_t *choice = json_array_get(json_object_get(chunk, "choices"), 0);
    json_t *content = json_object_get(json_object_get(choice, "delta"), "content");
    if (!content)
        content = json_object_get(json_object_get(choice, "message"), "content");
    const char *text = json_string_value(content);
    size_t len = json_string_length(content);
    if (text && len > 0) {
        if (buf_append(&s->answer, text, len) < 0) {
            cli_error_set(err, CLI_EXIT_ERROR, "the answer of Llm '%s' is larger than %u MiB",
                          s->llm, CHAT_ANSWER_MAX >> 20);
            goto out;
        }
        fwrite(text, 1, len, s->out);
        fflush(s->out);
    }
    rc = 0;
out:
    json_decref(chunk);
    return rc;
}

const char *chat_answer_text(const json_t *answer)
{
    json_t *choice = json_array_get(json_object_get(answer, "choices"), 0);
    return json_string_value(json_object_get(json_object_get(choice, "message"), "content"));
}

/* ---- one exchange ---- */

static void end_line(FILE *out, const char *text, size_t len)
{
    if (len == 0 || text[len - 1] != '\n')
        fputc('\n', out);
    fflush(out);
}

static int remember(struct chat *c, const char *user_msg, const char *answer, size_t len,
                    struct cli_error *err)
{
    json_t *u = message("user", user_msg, strlen(user_msg));
    json_t *a = message("assistant", answer, len);
    if (!u || !a) {
        json_decref(u);
        json_decref(a);
        return cli_error_set(err, CLI_EXIT_ERROR, "cannot keep the answer in the history");
    }
    if (json_array_append_new(c->messages, u) < 0) {
        json_decref(a);
        return cli_error_set(err, CLI_EXIT_ERROR, "cannot keep the answer in the history");
    }
    if (json_array_append_new(c->messages, a) < 0) {
        json_array_remove(c->messages, json_array_size(c->messages) - 1);
        return cli_error_set(err, CLI_EXIT_ERROR, "cannot keep the answer in the history");
    }
    return 0;
}

static int turn_streamed(struct chat *c, struct api *a, const char *llm, const char *user_msg,
                         const char *body, FILE *out, struct cli_error *err)
{
    struct chat_stream s;
    int rc = -1;
    chat_stream_init(&s, out, llm);
    if (api_infer_stream(a, llm, body, chat_stream_event, &s, err) < 0) {
        if (s.answer.len > 0)
            end_line(out, s.answer.data, s.answer.len);
        goto out;
    }
    end_line(out, s.answer.data ? s.answer.data : "", s.answer.len);
    if (!s.done) {
        cli_error_set(err, CLI_EXIT_INFER,
                      "the answer of Llm '%s' stopped before it was complete; try again", llm);
        goto out;
    }
    rc = remember(c, user_msg, s.answer.data ? s.answer.data : "", s.answer.len, err);
out:
    chat_stream_release(&s);
    return rc;
}

static int turn_whole(struct chat *c, struct api *a, const char *llm, const char *user_msg,
                      const char *body, FILE *out, struct cli_error *err)
{
    json_t *answer = NULL;
    int rc = -1;
    if (api_infer(a, llm, body, &answer, err) < 0)
        goto out;
    const char *text = chat_answer_text(answer);
    if (!text) {
        cli_error_set(err, CLI_EXIT_ERROR,
                      "the answer of Llm '%s' has no text (choices[0].message.content)", llm);
        goto out;
    }
    size_t len = strlen(text);
    fwrite(text, 1, len, out);
    end_line(out, text, len);
    rc = remember(c, user_msg, text, len, err);
out:
    json_decref(answer);
    return rc;
}

int chat_turn(struct chat *c, struct api *a, const char *llm, const char *user_msg, FILE *out,
              struct cli_error *err)
{
    char *body = chat_request_body(c, user_msg);
    if (!body)
        return cli_error_set(err, CLI_EXIT_USAGE, "the message is not valid UTF-8");
    int rc = c->opts.stream ? turn_streamed(c, a, llm, user_msg, body, out, err)
                            : turn_whole(c, a, llm, user_msg, body, out, err);
    free(body);
    return rc;
}
