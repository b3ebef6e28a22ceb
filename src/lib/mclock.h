/*
 * mclock: the project's clocks, in microseconds.
 *
 * Deadlines, queue waits and rate-limit arithmetic use the monotonic clock, which never jumps;
 * only timestamps shown to people (logs, "last change" in metrics) use wall time.
 */
#ifndef BULKHEAD_MCLOCK_H
#define BULKHEAD_MCLOCK_H

#include <pthread.h>
#include <stdint.h>
#include <time.h>

/* Monotonic microseconds since an arbitrary origin. */
static inline int64_t mclock_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Wall-clock microseconds since the Unix epoch. */
static inline int64_t mclock_wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Absolute CLOCK_MONOTONIC timespec for a monotonic-microsecond deadline (for timed waits on
 * condition variables created with pthread_condattr_setclock(CLOCK_MONOTONIC)). */
static inline struct timespec mclock_timespec(int64_t deadline_us)
{
    struct timespec ts;
    ts.tv_sec = (time_t)(deadline_us / 1000000);
    ts.tv_nsec = (long)(deadline_us % 1000000) * 1000;
    return ts;
}

/* A condition variable whose timed waits use the monotonic clock (mclock_timespec). */
static inline void mclock_cond_init(pthread_cond_t *cond)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(cond, &ca);
    pthread_condattr_destroy(&ca);
}

#endif
