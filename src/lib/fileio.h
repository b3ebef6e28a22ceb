/*
 * fileio: read a whole (small) file into memory, the one way the project reads files.
 *
 * Used for the .env file and TIERS_FILE. A path that opens but cannot be read (a directory,
 * an I/O error) is an error, not an empty file; a file larger than the caller's bound is refused
 * before more of it is read.
 */
#ifndef BULKHEAD_FILEIO_H
#define BULKHEAD_FILEIO_H

#include <stddef.h>

/* 0 with *out (NUL-terminated, caller frees) and *len; -errno from open/read; -EFBIG past max. */
int fileio_read(const char *path, size_t max, char **out, size_t *len)
    __attribute__((warn_unused_result));

#endif
