#include "loop.h"

#include "clock.h"

#include <stdlib.h>
#include <string.h>

/* Easy handles kept for reuse: creating one costs more than a transfer's
 * own work on the relay path. */
#define LOOP_SPARE_EASY 128
/* The connection cache: by default libcurl sizes it from the handles
 * currently added and closes connections as transfers end, which under
 * load means a new TCP connection for most requests. */
#define LOOP_MAX_CONNECTS 256L

/* Per-transfer bookkeeping, reached through CURLOPT_PRIVATE. */
struct xfer {
    loop_done_fn done;
    void *ud;
    bool added;   /* in the multi handle */
    bool removed; /* removal requested: never report done */
};

enum defer_kind { DEFER_ADD, DEFER_REMOVE, DEFER_CALL };

struct deferred {
    enum defer_kind kind;
    CURL *easy;
    struct xfer *x;
    bool cleanup;
    loop_defer_fn fn;
    void *ud;
    struct deferred *next;
};

struct loop {
    CURLM *multi;
    struct loop_timer *timers; /* sorted by due, earliest first */
    struct loop_fd *fds;
    size_t nfds;
    /* The watchers polled in the current iteration; entries are NULLed when
     * a watcher is removed while its event is being dispatched. */
    struct loop_fd **snap;
    struct curl_waitfd *wfds;
    size_t nsnap, snap_cap;
    int busy;
    struct deferred *dhead, *dtail;
    CURL *spare[LOOP_SPARE_EASY]; /* reset easy handles for reuse */
    size_t nspare;
};

struct loop *loop_new(void)
{
    struct loop *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->multi = curl_multi_init();
    if (!l->multi) {
        free(l);
        return NULL;
    }
    curl_multi_setopt(l->multi, CURLMOPT_MAXCONNECTS, LOOP_MAX_CONNECTS);
    return l;
}

static void free_deferred(struct loop *l)
{
    while (l->dhead) {
        struct deferred *d = l->dhead;
        l->dhead = d->next;
        if (d->kind == DEFER_REMOVE) {
            if (d->x->added)
                curl_multi_remove_handle(l->multi, d->easy);
            free(d->x);
            if (d->cleanup)
                curl_easy_cleanup(d->easy);
        }
        free(d);
    }
    l->dtail = NULL;
}

CURL *loop_easy_get(struct loop *l)
{
    if (l->nspare > 0)
        return l->spare[--l->nspare];
    return curl_easy_init();
}

void loop_easy_put(struct loop *l, CURL *easy)
{
    if (!easy)
        return;
    if (l->nspare == LOOP_SPARE_EASY) {
        curl_easy_cleanup(easy);
        return;
    }
    curl_easy_reset(easy);
    l->spare[l->nspare++] = easy;
}

void loop_free(struct loop *l)
{
    if (!l)
        return;
    free_deferred(l);
    while (l->nspare > 0)
        curl_easy_cleanup(l->spare[--l->nspare]);
    curl_multi_cleanup(l->multi);
    free(l->snap);
    free(l->wfds);
    free(l);
}

int64_t loop_now(const struct loop *l)
{
    (void)l;
    return clock_mono_ms();
}

void loop_timer_init(struct loop_timer *t, loop_timer_fn fn, void *ud)
{
    memset(t, 0, sizeof *t);
    t->fn = fn;
    t->ud = ud;
}

void loop_timer_stop(struct loop *l, struct loop_timer *t)
{
    if (!t->armed)
        return;
    if (t->prev)
        t->prev->next = t->next;
    else
        l->timers = t->next;
    if (t->next)
        t->next->prev = t->prev;
    t->prev = t->next = NULL;
    t->armed = false;
}

void loop_timer_start(struct loop *l, struct loop_timer *t, int64_t delay_ms)
{
    loop_timer_stop(l, t);
    if (delay_ms < 0)
        delay_ms = 0;
    t->due = clock_mono_ms() + delay_ms;
    struct loop_timer *prev = NULL, *cur = l->timers;
    while (cur && cur->due <= t->due) {
        prev = cur;
        cur = cur->next;
    }
    t->prev = prev;
    t->next = cur;
    if (prev)
        prev->next = t;
    else
        l->timers = t;
    if (cur)
        cur->prev = t;
    t->armed = true;
}

int loop_fd_add(struct loop *l, struct loop_fd *w, int fd, short events, loop_fd_fn fn, void *ud)
{
    memset(w, 0, sizeof *w);
    w->fd = fd;
    w->events = events;
    w->fn = fn;
    w->ud = ud;
    w->active = true;
    w->next = l->fds;
    if (l->fds)
        l->fds->prev = w;
    l->fds = w;
    l->nfds++;
    return 0;
}

void loop_fd_remove(struct loop *l, struct loop_fd *w)
{
    if (!w->active)
        return;
    if (w->prev)
        w->prev->next = w->next;
    else
        l->fds = w->next;
    if (w->next)
        w->next->prev = w->prev;
    w->prev = w->next = NULL;
    w->active = false;
    l->nfds--;
    for (size_t i = 0; i < l->nsnap; i++)
        if (l->snap[i] == w)
            l->snap[i] = NULL;
}

static int push_deferred(struct loop *l, struct deferred *d)
{
    d->next = NULL;
    if (l->dtail)
        l->dtail->next = d;
    else
        l->dhead = d;
    l->dtail = d;
    return 0;
}

static int add_now(struct loop *l, CURL *easy, struct xfer *x)
{
    if (curl_multi_add_handle(l->multi, easy) != CURLM_OK)
        return -1;
    x->added = true;
    return 0;
}

int loop_add_easy(struct loop *l, CURL *easy, loop_done_fn done, void *ud)
{
    struct xfer *x = calloc(1, sizeof *x);
    if (!x)
        return -1;
    x->done = done;
    x->ud = ud;
    curl_easy_setopt(easy, CURLOPT_PRIVATE, (char *)x);
    if (l->busy > 0) {
        struct deferred *d = calloc(1, sizeof *d);
        if (!d)
            goto fail;
        d->kind = DEFER_ADD;
        d->easy = easy;
        d->x = x;
        return push_deferred(l, d);
    }
    if (add_now(l, easy, x) < 0)
        goto fail;
    return 0;
fail:
    curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
    free(x);
    return -1;
}

void loop_remove_easy(struct loop *l, CURL *easy, bool cleanup)
{
    struct xfer *x = NULL;
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&x);
    if (!x) {
        if (cleanup)
            loop_easy_put(l, easy);
        return;
    }
    if (x->removed)
        return;
    x->removed = true;
    if (l->busy > 0) {
        struct deferred *d = calloc(1, sizeof *d);
        if (d) {
            d->kind = DEFER_REMOVE;
            d->easy = easy;
            d->x = x;
            d->cleanup = cleanup;
            push_deferred(l, d);
            return;
        }
        /* Out of memory: fall through and remove at once, the lesser evil. */
    }
    if (x->added)
        curl_multi_remove_handle(l->multi, easy);
    curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
    free(x);
    if (cleanup)
        loop_easy_put(l, easy);
}

int loop_defer(struct loop *l, loop_defer_fn fn, void *ud)
{
    struct deferred *d = calloc(1, sizeof *d);
    if (!d)
        return -1;
    d->kind = DEFER_CALL;
    d->fn = fn;
    d->ud = ud;
    return push_deferred(l, d);
}

void loop_busy_enter(struct loop *l)
{
    l->busy++;
}

void loop_busy_leave(struct loop *l)
{
    l->busy--;
}

bool loop_busy(const struct loop *l)
{
    return l->busy > 0;
}

static void run_deferred(struct loop *l)
{
    while (l->dhead && l->busy == 0) {
        struct deferred *d = l->dhead;
        l->dhead = d->next;
        if (!l->dhead)
            l->dtail = NULL;
        switch (d->kind) {
        case DEFER_ADD:
            if (!d->x->removed && add_now(l, d->easy, d->x) < 0) {
                struct xfer *x = d->x;
                curl_easy_setopt(d->easy, CURLOPT_PRIVATE, NULL);
                x->done(l, d->easy, CURLE_FAILED_INIT, x->ud);
                free(x);
            }
            break;
        case DEFER_REMOVE:
            if (d->x->added)
                curl_multi_remove_handle(l->multi, d->easy);
            curl_easy_setopt(d->easy, CURLOPT_PRIVATE, NULL);
            free(d->x);
            if (d->cleanup)
                loop_easy_put(l, d->easy);
            break;
        case DEFER_CALL:
            d->fn(l, d->ud);
            break;
        }
        free(d);
    }
}

static void dispatch_done(struct loop *l)
{
    int left = 0;
    CURLMsg *msg;
    while ((msg = curl_multi_info_read(l->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURL *easy = msg->easy_handle;
        CURLcode rc = msg->data.result;
        struct xfer *x = NULL;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&x);
        if (!x || x->removed)
            continue;
        curl_multi_remove_handle(l->multi, easy);
        curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
        loop_done_fn done = x->done;
        void *ud = x->ud;
        free(x);
        done(l, easy, rc, ud);
        run_deferred(l);
    }
}

static void run_timers(struct loop *l)
{
    int64_t now = clock_mono_ms();
    /* Bounded, so a timer that keeps re-arming itself at 0 cannot starve
     * the network. */
    for (int budget = 256; budget > 0 && l->timers && l->timers->due <= now; budget--) {
        struct loop_timer *t = l->timers;
        loop_timer_stop(l, t);
        t->fn(l, t->ud);
        run_deferred(l);
    }
}

static int ensure_snap(struct loop *l)
{
    if (l->nfds <= l->snap_cap)
        return 0;
    size_t cap = l->nfds + 8;
    struct loop_fd **s = realloc(l->snap, cap * sizeof *s);
    if (!s)
        return -1;
    l->snap = s;
    struct curl_waitfd *w = realloc(l->wfds, cap * sizeof *w);
    if (!w)
        return -1;
    l->wfds = w;
    l->snap_cap = cap;
    return 0;
}

int loop_run_once(struct loop *l, int max_wait_ms)
{
    int64_t now = clock_mono_ms();
    int64_t timeout = max_wait_ms;
    if (l->dhead)
        timeout = 0;
    if (l->timers && l->timers->due - now < timeout)
        timeout = l->timers->due - now;
    if (timeout < 0)
        timeout = 0;

    if (ensure_snap(l) < 0)
        return -1;
    size_t n = 0;
    for (struct loop_fd *w = l->fds; w; w = w->next) {
        l->snap[n] = w;
        l->wfds[n].fd = w->fd;
        l->wfds[n].events = w->events;
        l->wfds[n].revents = 0;
        n++;
    }
    l->nsnap = n;
    CURLMcode mc = curl_multi_poll(l->multi, l->wfds, (unsigned)n, (int)timeout, NULL);
    if (mc != CURLM_OK) {
        l->nsnap = 0;
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        struct loop_fd *w = l->snap[i];
        if (w && l->wfds[i].revents)
            w->fn(l, w->fd, l->wfds[i].revents, w->ud);
        run_deferred(l);
    }
    l->nsnap = 0;

    int running = 0;
    l->busy++;
    mc = curl_multi_perform(l->multi, &running);
    l->busy--;
    run_deferred(l);
    if (mc != CURLM_OK)
        return -1;
    dispatch_done(l);
    run_timers(l);
    run_deferred(l);
    return 0;
}

void loop_wakeup(struct loop *l)
{
    curl_multi_wakeup(l->multi);
}
