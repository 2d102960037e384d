#include "loop.h"

#include "clock.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* Easy handles kept for reuse: creating one costs more than a transfer's
 * own work on the relay path. */
#define LOOP_SPARE_EASY 128
/* The connection cache: by default libcurl sizes it from the handles
 * currently added and closes connections as transfers end, which under
 * load means a new TCP connection for most requests. */
#define LOOP_MAX_CONNECTS 256L

/* Events taken from epoll per iteration. */
#define LOOP_MAX_EVENTS 64

/* What an epoll event's data.ptr points at; every target starts with its
 * tag. */
enum tag { TAG_SOCK = 1, TAG_FD, TAG_WAKE };

/* What the loop knows of one socket libcurl uses, by descriptor number.
 * Registrations are dropped lazily: when libcurl stops watching a socket
 * (a transfer ended and its connection went back to the cache), the socket
 * stays in epoll, so the next transfer on that connection usually costs no
 * epoll_ctl() at all. An event on a socket libcurl does not watch removes it
 * then; a socket libcurl closes is removed first (CURLOPT_CLOSESOCKETFUNCTION),
 * so a new socket that gets the same number is registered afresh. */
struct sock {
    int tag;
    curl_socket_t fd;
    uint32_t reg;  /* the events registered in epoll */
    bool in_epoll; /* registered */
    bool wanted;   /* libcurl watches it */
};

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
    int epfd;
    int wakefd; /* eventfd for loop_wakeup() */
    int wake_tag;
    int64_t curl_due;          /* libcurl's next timeout (monotonic ms), or -1 */
    bool failed;               /* libcurl failed in a way the loop cannot recover from */
    struct loop_timer *timers; /* sorted by due, earliest first */
    struct sock **socks;       /* by descriptor number; entries made on demand */
    size_t nsocks;
    /* The events being dispatched; data.ptr is NULLed when its watcher or
     * socket goes away meanwhile. */
    struct epoll_event ev[LOOP_MAX_EVENTS];
    int nev;
    int busy;
    struct deferred *dhead, *dtail;
    struct loop_hook *hooks;      /* armed end-of-iteration hooks */
    CURL *spare[LOOP_SPARE_EASY]; /* reset easy handles for reuse */
    size_t nspare;
};

static void forget_in_batch(struct loop *l, const void *p)
{
    for (int i = 0; i < l->nev; i++)
        if (l->ev[i].data.ptr == p)
            l->ev[i].data.ptr = NULL;
}

static struct sock *sock_for(struct loop *l, curl_socket_t fd)
{
    if (fd < 0)
        return NULL;
    size_t i = (size_t)fd;
    if (i >= l->nsocks) {
        size_t n = l->nsocks ? l->nsocks : 64;
        while (n <= i)
            n *= 2;
        struct sock **t = realloc(l->socks, n * sizeof *t);
        if (!t)
            return NULL;
        memset(t + l->nsocks, 0, (n - l->nsocks) * sizeof *t);
        l->socks = t;
        l->nsocks = n;
    }
    if (!l->socks[i]) {
        struct sock *k = calloc(1, sizeof *k);
        if (!k)
            return NULL;
        k->tag = TAG_SOCK;
        k->fd = fd;
        l->socks[i] = k;
    }
    return l->socks[i];
}

static void sock_unregister(struct loop *l, struct sock *k)
{
    if (k->in_epoll)
        epoll_ctl(l->epfd, EPOLL_CTL_DEL, k->fd, NULL);
    k->in_epoll = false;
    k->reg = 0;
}

static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    (void)easy;
    (void)socketp;
    struct loop *l = userp;
    struct sock *k = sock_for(l, fd);
    if (!k)
        return -1;
    if (what == CURL_POLL_REMOVE || what == CURL_POLL_NONE) {
        k->wanted = false;
        return 0;
    }
    uint32_t want = 0;
    if (what & CURL_POLL_IN)
        want |= EPOLLIN;
    if (what & CURL_POLL_OUT)
        want |= EPOLLOUT;
    k->wanted = true;
    if (k->in_epoll && k->reg == want)
        return 0;
    struct epoll_event e = {.events = want, .data.ptr = k};
    int op = k->in_epoll ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    if (epoll_ctl(l->epfd, op, fd, &e) < 0) {
        /* Closed and reused without our knowing, or dropped from epoll by
         * a close: register it afresh. */
        if (errno != EEXIST && errno != ENOENT)
            return -1;
        op = errno == EEXIST ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
        if (epoll_ctl(l->epfd, op, fd, &e) < 0)
            return -1;
    }
    k->in_epoll = true;
    k->reg = want;
    return 0;
}

static int on_close_socket(void *clientp, curl_socket_t fd)
{
    struct loop *l = clientp;
    if (fd >= 0 && (size_t)fd < l->nsocks && l->socks[fd]) {
        sock_unregister(l, l->socks[fd]);
        l->socks[fd]->wanted = false;
    }
    return close(fd);
}

static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    struct loop *l = userp;
    l->curl_due = timeout_ms < 0 ? -1 : clock_mono_ms() + timeout_ms;
    return 0;
}

struct loop *loop_new(void)
{
    struct loop *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->curl_due = -1;
    l->wake_tag = TAG_WAKE;
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    l->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    l->multi = curl_multi_init();
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = &l->wake_tag};
    if (l->epfd < 0 || l->wakefd < 0 || !l->multi ||
        epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->wakefd, &e) < 0) {
        if (l->multi)
            curl_multi_cleanup(l->multi);
        if (l->epfd >= 0)
            close(l->epfd);
        if (l->wakefd >= 0)
            close(l->wakefd);
        free(l);
        return NULL;
    }
    curl_multi_setopt(l->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(l->multi, CURLMOPT_SOCKETDATA, l);
    curl_multi_setopt(l->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(l->multi, CURLMOPT_TIMERDATA, l);
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
    /* libcurl may still report sockets going away while it cleans up. */
    curl_multi_cleanup(l->multi);
    for (size_t i = 0; i < l->nsocks; i++)
        free(l->socks[i]);
    free(l->socks);
    close(l->epfd);
    close(l->wakefd);
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

static uint32_t epoll_events(short events)
{
    uint32_t e = 0;
    if (events & CURL_WAIT_POLLIN)
        e |= EPOLLIN;
    if (events & CURL_WAIT_POLLOUT)
        e |= EPOLLOUT;
    if (events & CURL_WAIT_POLLPRI)
        e |= EPOLLPRI;
    return e;
}

int loop_fd_add(struct loop *l, struct loop_fd *w, int fd, short events, loop_fd_fn fn, void *ud)
{
    memset(w, 0, sizeof *w);
    w->tag = TAG_FD;
    w->fd = fd;
    w->events = events;
    w->fn = fn;
    w->ud = ud;
    struct epoll_event e = {.events = epoll_events(events), .data.ptr = w};
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &e) < 0)
        return -1;
    w->active = true;
    return 0;
}

void loop_fd_remove(struct loop *l, struct loop_fd *w)
{
    if (!w->active)
        return;
    /* Fails harmlessly when the owner closed the descriptor first. */
    epoll_ctl(l->epfd, EPOLL_CTL_DEL, w->fd, NULL);
    w->active = false;
    forget_in_batch(l, w);
}

int loop_fd_modify(struct loop *l, struct loop_fd *w, short events)
{
    struct epoll_event e = {.events = epoll_events(events), .data.ptr = w};
    if (epoll_ctl(l->epfd, EPOLL_CTL_MOD, w->fd, &e) < 0)
        return -1;
    w->events = events;
    return 0;
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
    curl_easy_setopt(easy, CURLOPT_CLOSESOCKETFUNCTION, on_close_socket);
    curl_easy_setopt(easy, CURLOPT_CLOSESOCKETDATA, l);
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

static void run_deferred(struct loop *l);

void loop_hook_init(struct loop_hook *h, loop_defer_fn fn, void *ud)
{
    h->fn = fn;
    h->ud = ud;
    h->armed = false;
    h->next = NULL;
}

void loop_hook_arm(struct loop *l, struct loop_hook *h)
{
    if (h->armed)
        return;
    h->armed = true;
    h->next = l->hooks;
    l->hooks = h;
}

void loop_hook_cancel(struct loop *l, struct loop_hook *h)
{
    if (!h->armed)
        return;
    for (struct loop_hook **pp = &l->hooks; *pp; pp = &(*pp)->next)
        if (*pp == h) {
            *pp = h->next;
            break;
        }
    h->armed = false;
    h->next = NULL;
}

static void run_hooks(struct loop *l)
{
    while (l->hooks) {
        struct loop_hook *h = l->hooks;
        l->hooks = h->next;
        h->armed = false;
        h->next = NULL;
        h->fn(l, h->ud);
        run_deferred(l);
    }
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

/* Hands libcurl one ready socket (or, with CURL_SOCKET_TIMEOUT, its due
 * timeouts), then reports finished transfers. */
static void curl_action(struct loop *l, curl_socket_t fd, int mask)
{
    int running = 0;
    l->busy++;
    CURLMcode mc = curl_multi_socket_action(l->multi, fd, mask, &running);
    l->busy--;
    if (mc != CURLM_OK && mc != CURLM_BAD_SOCKET)
        l->failed = true;
    run_deferred(l);
    dispatch_done(l);
}

static void dispatch_fd(struct loop *l, struct loop_fd *w, uint32_t e)
{
    short rev = 0;
    if (e & EPOLLIN)
        rev |= CURL_WAIT_POLLIN;
    if (e & EPOLLOUT)
        rev |= CURL_WAIT_POLLOUT;
    if (e & EPOLLPRI)
        rev |= CURL_WAIT_POLLPRI;
    /* A hang-up or error: let the owner find out by reading or writing. */
    if (e & (EPOLLHUP | EPOLLERR))
        rev |= w->events & (CURL_WAIT_POLLIN | CURL_WAIT_POLLOUT);
    rev &= w->events;
    if (rev)
        w->fn(l, w->fd, rev, w->ud);
}

static void run_curl_timeouts(struct loop *l)
{
    /* Bounded: a timeout libcurl keeps re-arming at 0 must not starve the
     * rest of the loop. */
    for (int budget = 4; budget > 0 && l->curl_due >= 0 && l->curl_due <= clock_mono_ms();
         budget--) {
        l->curl_due = -1;
        curl_action(l, CURL_SOCKET_TIMEOUT, 0);
    }
}

int loop_run_once(struct loop *l, int max_wait_ms)
{
    int64_t now = clock_mono_ms();
    int64_t timeout = max_wait_ms;
    if (l->dhead || l->hooks)
        timeout = 0;
    if (l->timers && l->timers->due - now < timeout)
        timeout = l->timers->due - now;
    if (l->curl_due >= 0 && l->curl_due - now < timeout)
        timeout = l->curl_due - now;
    if (timeout < 0)
        timeout = 0;

    int n = epoll_wait(l->epfd, l->ev, LOOP_MAX_EVENTS, (int)timeout);
    if (n < 0 && errno == EINTR) {
        /* A stop signal and SIGCONT interrupt epoll_wait() even without a
         * handler: take what became ready meanwhile before timers run, so
         * a timer does not judge a peer whose bytes are still unread. */
        n = epoll_wait(l->epfd, l->ev, LOOP_MAX_EVENTS, 0);
    }
    if (n < 0) {
        if (errno != EINTR)
            return -1;
        n = 0;
    }
    l->nev = n;
    for (int i = 0; i < n; i++) {
        void *p = l->ev[i].data.ptr;
        uint32_t e = l->ev[i].events;
        if (!p)
            continue;
        switch (*(const int *)p) {
        case TAG_SOCK: {
            struct sock *k = p;
            if (!k->wanted) {
                /* An idle connection's socket: the peer closed it or sent
                 * something unasked; libcurl finds out when it reuses it. */
                sock_unregister(l, k);
                break;
            }
            int mask = 0;
            if (e & (EPOLLIN | EPOLLHUP))
                mask |= CURL_CSELECT_IN;
            if (e & EPOLLOUT)
                mask |= CURL_CSELECT_OUT;
            if (e & EPOLLERR)
                mask |= CURL_CSELECT_ERR;
            curl_action(l, k->fd, mask);
            break;
        }
        case TAG_FD:
            dispatch_fd(l, p, e);
            break;
        case TAG_WAKE: {
            uint64_t v;
            while (read(l->wakefd, &v, sizeof v) < 0 && errno == EINTR)
                ;
            break;
        }
        }
        run_deferred(l);
    }
    l->nev = 0;
    run_curl_timeouts(l);
    run_timers(l);
    run_deferred(l);
    run_hooks(l);
    /* Transfers added by the timers and deferred calls start now rather
     * than after another round trip through epoll. */
    run_curl_timeouts(l);
    if (l->failed) {
        l->failed = false;
        return -1;
    }
    return 0;
}

void loop_wakeup(struct loop *l)
{
    uint64_t one = 1;
    ssize_t r;
    do {
        r = write(l->wakefd, &one, sizeof one);
    } while (r < 0 && errno == EINTR);
}
