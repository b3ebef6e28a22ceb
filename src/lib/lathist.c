/*
 * lathist: quarter-octave latency histograms (see lathist.h).
 */
#include "lathist.h"

#include <math.h>

/* The quarter-octave bucket of us: 4 * floor(log2 us) plus the quarter it falls in. */
size_t lathist_bucket(int64_t us)
{
    if (us < 1)
        return 0;
    int e = 63 - __builtin_clzll((unsigned long long)us);
    uint64_t m = e >= 10 ? (uint64_t)us >> (e - 10) : (uint64_t)us << (10 - e); /* [1024, 2048) */
    size_t q = (m >= 1218) + (m >= 1448) + (m >= 1722); /* 2^(1/4), 2^(2/4), 2^(3/4) */
    size_t k = 4 * (size_t)e + q;
    return k < LATHIST_BUCKETS ? k : LATHIST_BUCKETS - 1;
}

/* The middle of bucket k, in us. */
double lathist_mid(size_t k)
{
    return exp2(((double)k + 0.5) / 4.0);
}

/* The value of rank r (1-based) among the n latencies of d[] (a histogram's difference). */
double lathist_rank(const uint64_t *d, uint64_t r)
{
    uint64_t seen = 0;
    for (size_t k = 0; k < LATHIST_BUCKETS; k++) {
        seen += d[k];
        if (seen >= r)
            return lathist_mid(k);
    }
    return lathist_mid(LATHIST_BUCKETS - 1);
}

/* The mean of the fastest nine tenths of the n latencies of d[]. */
double lathist_typical(const uint64_t *d, uint64_t n)
{
    uint64_t want = (9 * n + 9) / 10, got = 0;
    double sum = 0;
    for (size_t k = 0; k < LATHIST_BUCKETS && got < want; k++) {
        uint64_t take = d[k] < want - got ? d[k] : want - got;
        sum += (double)take * lathist_mid(k);
        got += take;
    }
    return got ? sum / (double)got : 0;
}
