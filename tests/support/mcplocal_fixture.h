/*
 * mcplocal_fixture.h - the real mcplocal between the fake mcpd and the
 * fake OpenAI backend, in a temp dir of its own: what the task and result
 * stream tests start for each test.
 *
 * mlfx_new() starts the fakes, so a test can script them (the fake mcpd's
 * hello, say) before mlfx_launch() writes mcplocal's files, starts it with
 * fast backoff and waits for its control stream.
 */
#ifndef TEST_MCPLOCAL_FIXTURE_H
#define TEST_MCPLOCAL_FIXTURE_H

struct mlfx {
    char *dir;
    struct fake_mcpd *fm;
    struct fake_backend *fb;
    struct proc *p; /* NULL once a test has stopped it itself */
};

#define MLFX_WAIT_MS 10000

/* The fakes and a temp dir named after name; NULL on failure. */
struct mlfx *mlfx_new(const char *name);
/* Writes the credentials (the fake mcpd's URL) and config_json, starts
 * mcplocal with env_extra (NULL-terminated "NAME=value", or NULL) and waits
 * until its stream is up. 0, or -1 (its output dumped). */
int mlfx_launch(struct mlfx *x, const char *config_json, const char *const env_extra[]);
/* Stops mcplocal (its exit must be clean: 0 returned) and everything else. */
int mlfx_free(struct mlfx *x);

#endif
