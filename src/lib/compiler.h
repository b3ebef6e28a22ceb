/*
 * compiler: small language helpers every module may use.
 */
#ifndef BULKHEAD_COMPILER_H
#define BULKHEAD_COMPILER_H

#include <stddef.h>

/* The struct of type that holds, as its member, what ptr points at (an intrusive node back to
 * its owner). ptr's type must be a pointer to the member's type: a mismatch is a compile error
 * (GCC and Clang's __typeof__ and __builtin_types_compatible_p, as Linux does). */
#define container_of(ptr, type, member)                                                            \
    __extension__({                                                                                \
        _Static_assert(                                                                            \
            __builtin_types_compatible_p(__typeof__(*(ptr)), __typeof__(((type *)0)->member)),     \
            "container_of: ptr is not a pointer to " #type "." #member);                           \
        (type *)(void *)((char *)(ptr)-offsetof(type, member));                                    \
    })

#endif
