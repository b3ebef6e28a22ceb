/*
 * lathist: latency histograms of quarter-octave buckets: bucket k holds [2^(k/4), 2^((k+1)/4))
 * us, so a quantile is known to within 19 %, and LATHIST_BUCKETS of them reach half a minute.
 * The histogram itself is the caller's array of counters (capctl's are atomics, read as the
 * difference between two readings); these are the bucket arithmetic and the readings of such a
 * difference. Pure functions: any thread.
 */
#ifndef BULKHEAD_LATHIST_H
#define BULKHEAD_LATHIST_H

#include <stddef.h>
#include <stdint.h>

#define LATHIST_BUCKETS 100 /* up to 2^25 us: half a minute */

/* The bucket of a latency of us microseconds (below 1: bucket 0; past the last: the last). */
size_t lathist_bucket(int64_t us);

/* The middle of bucket k, in us. */
double lathist_mid(size_t k);

/* The value of rank r (1-based) among the latencies of d[LATHIST_BUCKETS]. */
double lathist_rank(const uint64_t *d, uint64_t r);

/* The mean of the fastest nine tenths of the n latencies of d[LATHIST_BUCKETS] (0: none). */
double lathist_typical(const uint64_t *d, uint64_t n);

#endif
