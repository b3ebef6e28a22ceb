/*
 * dotenv: a .env file's KEY=VALUE lines, parsed (dotenv_parse) or loaded into the environment
 * without overriding what is set (dotenv_load). Used by config_load_all before the settings
 * table is read; it knows nothing of the table. Main thread, before any other thread starts
 * (setenv).
 */
#ifndef BULKHEAD_DOTENV_H
#define BULKHEAD_DOTENV_H

#include <stddef.h>

/*
 * Load KEY=VALUE lines from a .env file into the environment without overriding variables that
 * are already set to a non-empty value (the dotenv convention, with empty meaning unset; an
 * empty value in the file sets nothing). Syntax: blank lines and lines starting with '#' are
 * skipped; "export " before the name is allowed; a value in '...' or "..." is taken verbatim up
 * to the first matching quote (no escapes) and only a comment may follow it; an unquoted value
 * is trimmed and ends at a '#' that starts it or follows a blank. Returns 0, -ENOENT when there
 * is no file, another negative errno with "path: reason" in err when it cannot be read, or
 * -EINVAL with "path: line N: reason" in err for a malformed line (nothing is set in either
 * case).
 */
int dotenv_load(const char *path, char *err, size_t errlen) __attribute__((warn_unused_result));

/* Parse a .env text; calls set(name, value, ctx) for each assignment. Same errors as above. */
int dotenv_parse(const char *text, size_t len, void (*set)(const char *, const char *, void *),
                 void *ctx, char *err, size_t errlen) __attribute__((warn_unused_result));

#endif
