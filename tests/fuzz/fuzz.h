/*
 * fuzz: what every libFuzzer target shares. FUZZ_CHECK states an invariant of the parser under
 * test; a violation prints it and aborts, so libFuzzer saves the input as a crash (whatever
 * NDEBUG says). scripts/fuzz.sh builds and runs the targets.
 */
#ifndef BULKHEAD_FUZZ_H
#define BULKHEAD_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "invariant violated: %s (%s:%d)\n", #cond, __FILE__, __LINE__);        \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The input as a NUL-terminated string (it ends at its first NUL byte); the caller frees it. */
static inline char *fuzz_cstr(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    FUZZ_CHECK(s != NULL);
    if (size)
        memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

#endif
