/*
 * fileio: whole-file reads (see fileio.h).
 */
#include "fileio.h"
#include "xalloc.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int fileio_read(const char *path, size_t max, char **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -errno;
    char *buf = xmalloc(1);
    size_t used = 0, cap = 1;
    char chunk[4096];
    size_t n;
    int rc = 0;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (used + n > max) {
            rc = -EFBIG;
            break;
        }
        if (used + n + 1 > cap) {
            cap = (used + n + 1) * 2;
            buf = xrealloc(buf, cap);
        }
        memcpy(buf + used, chunk, n);
        used += n;
    }
    if (rc == 0 && ferror(f))
        rc = errno ? -errno : -EIO;
    fclose(f);
    if (rc) {
        free(buf);
        return rc;
    }
    buf[used] = '\0';
    *out = buf;
    *len = used;
    return 0;
}
