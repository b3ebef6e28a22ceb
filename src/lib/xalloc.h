/*
 * xalloc: the one place where allocation failure is handled.
 *
 * bulkhead treats running out of memory as fatal: every x* function either returns memory or
 * prints the failed size and aborts. Callers never check for NULL, so no error path is silently
 * skipped. Ownership stays with the caller: free() what an x* function returns.
 */
#ifndef BULKHEAD_XALLOC_H
#define BULKHEAD_XALLOC_H

#include <stddef.h>

void *xmalloc(size_t size);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *ptr, size_t size);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
/* printf into a new string; the caller frees it. */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
