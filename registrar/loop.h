/*
 * loop.h - mcplocal's one event loop: libcurl multi, timers and file
 * descriptors, all driven by epoll on one thread.
 *
 * Everything mcplocal does concurrently (the control stream, heartbeats,
 * result posts, upstream calls, wake recipes and their child processes) is a
 * transfer, a timer or a watched descriptor on one struct loop.
 *
 * Transfers run through libcurl's socket interface
 * (curl_multi_socket_action()): libcurl tells the loop which sockets to watch
 * and when its next timeout is due, and each wake-up hands libcurl only the
 * sockets that are ready, so the cost of an event does not grow with the
 * number of transfers in flight.
 *
 * libcurl forbids multi calls from inside its callbacks. The loop therefore
 * knows when it is "busy" (inside a libcurl call or a callback that libcurl
 * invoked) and defers adding and removing transfers until libcurl has
 * returned: loop_add_easy() and loop_defer() are safe to call anywhere.
 *
 * Timers and watchers are embedded in their owner's struct; the loop never
 * allocates or frees them. A callback may start or stop any timer or watcher,
 * including its own.
 */
#ifndef MCPLOCAL_LOOP_H
#define MCPLOCAL_LOOP_H

#include <curl/curl.h>
#include <stdbool.h>
#include <stdint.h>

struct loop;
struct loop_timer;
struct loop_fd;

typedef void (*loop_timer_fn)(struct loop *l, void *ud);
/* revents holds CURL_WAIT_POLLIN / CURL_WAIT_POLLOUT / CURL_WAIT_POLLPRI. */
typedef void (*loop_fd_fn)(struct loop *l, int fd, short revents, void *ud);
/* Called once when a transfer ends (rc is libcurl's result); the easy handle
 * has been removed from the multi handle and is the caller's again. */
typedef void (*loop_done_fn)(struct loop *l, CURL *easy, CURLcode rc, void *ud);
typedef void (*loop_defer_fn)(struct loop *l, void *ud);

struct loop_timer {
    int64_t due; /* monotonic ms */
    bool armed;
    loop_timer_fn fn;
    void *ud;
    struct loop_timer *prev, *next;
};

struct loop_fd {
    int tag; /* the loop's: tells watchers from libcurl sockets */
    int fd;
    short events; /* CURL_WAIT_POLLIN and/or CURL_WAIT_POLLOUT */
    bool active;
    loop_fd_fn fn;
    void *ud;
};

/* Returns a new loop, or NULL when libcurl or memory failed. Free with
 * loop_free(). curl_global_init() must have been called. */
struct loop *loop_new(void);
/* Frees the loop. Owners must have removed their transfers first; timers
 * and watchers are simply forgotten. NULL is a no-op. */
void loop_free(struct loop *l);

/* The loop's notion of now (monotonic ms, via clock.h). */
int64_t loop_now(const struct loop *l);

void loop_timer_init(struct loop_timer *t, loop_timer_fn fn, void *ud);
/* Arms (or re-arms) t to fire once, delay_ms from now. */
void loop_timer_start(struct loop *l, struct loop_timer *t, int64_t delay_ms);
/* Disarms t; a no-op when it is not armed. */
void loop_timer_stop(struct loop *l, struct loop_timer *t);

/* Watches fd for events until loop_fd_remove(). Returns 0, or -1 when the
 * descriptor cannot be watched (w is then not active). A hang-up or error
 * on fd is reported as the events asked for, so the owner reads the EOF. */
int loop_fd_add(struct loop *l, struct loop_fd *w, int fd, short events, loop_fd_fn fn, void *ud);
/* Stops watching; a no-op when w is not active. Does not close the fd. */
void loop_fd_remove(struct loop *l, struct loop_fd *w);
/* Changes the events an active w watches. Returns 0, or -1 when epoll
 * refused (w then watches what it did before). */
int loop_fd_modify(struct loop *l, struct loop_fd *w, short events);

/* Adds a prepared easy handle; done is called once when it ends. The easy's
 * CURLOPT_PRIVATE is used by the loop. Returns 0, or -1 when libcurl refused
 * (done is then not called). Deferred while the loop is busy. */
int loop_add_easy(struct loop *l, CURL *easy, loop_done_fn done, void *ud);
/* Removes an easy handle at once or, when the loop is busy, as soon as
 * libcurl has returned; done is not called for it afterwards. If cleanup is
 * true the handle is given to loop_easy_put() after removal. */
void loop_remove_easy(struct loop *l, CURL *easy, bool cleanup);

/* An easy handle for a new transfer: a reset one from the loop's free list
 * (set up again from scratch by the caller), else a new one. NULL when out
 * of memory. */
CURL *loop_easy_get(struct loop *l);
/* Gives an easy handle that is in no multi handle back to the free list
 * (curl_easy_reset()), or cleans it up when the list is full. */
void loop_easy_put(struct loop *l, CURL *easy);

/* Runs fn(ud) after the current libcurl call has returned (or on the next
 * iteration when the loop is idle). Returns 0, or -1 when out of memory. */
int loop_defer(struct loop *l, loop_defer_fn fn, void *ud);

/* An end-of-iteration hook, embedded in its owner's struct: armed, it runs
 * fn(ud) once after the iteration's events, timers and deferred calls, so
 * work gathered during one iteration (sends to coalesce, say) is done once
 * at its end. Armed outside loop_run_once(), it runs at the end of the next
 * iteration, which then does not wait. Arming an armed hook does nothing;
 * a hook armed while the hooks run runs in the same round. No allocation. */
struct loop_hook {
    loop_defer_fn fn;
    void *ud;
    bool armed;
    struct loop_hook *next;
};

void loop_hook_init(struct loop_hook *h, loop_defer_fn fn, void *ud);
void loop_hook_arm(struct loop *l, struct loop_hook *h);
/* Disarms h; a no-op when it is not armed. */
void loop_hook_cancel(struct loop *l, struct loop_hook *h);

/* Marks the loop busy around a region in which libcurl may invoke callbacks
 * (curl_easy_pause(), for instance). Nested calls are counted. */
void loop_busy_enter(struct loop *l);
void loop_busy_leave(struct loop *l);
/* True while inside a libcurl call or a busy region. */
bool loop_busy(const struct loop *l);

/* Runs one iteration: waits at most max_wait_ms (less when a timer is due
 * sooner) for network or descriptor activity, then dispatches transfers,
 * watchers, deferred calls, due timers and armed hooks. Returns 0, or -1 when libcurl
 * failed in a way the loop cannot recover from. */
int loop_run_once(struct loop *l, int max_wait_ms);

/* Wakes a loop_run_once() that is waiting (safe from other threads). */
void loop_wakeup(struct loop *l);

#endif
