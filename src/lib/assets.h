/*
 * assets: files compiled into the binary, so it runs from anywhere with no data directory.
 *
 * config/tiers.json (the built-in tier table), web/dashboard.html (the live dashboard) and
 * init-db.sql (the schema, whose tenants part the server applies to an older database) are
 * embedded by assets.c with the assembler's .incbin; the Makefile rebuilds it when they change.
 * Each blob is followed by a NUL byte, which the _len excludes.
 */
#ifndef BULKHEAD_ASSETS_H
#define BULKHEAD_ASSETS_H

#include <stddef.h>

extern const char assets_tiers_json[];
extern const size_t assets_tiers_json_len;
extern const char assets_dashboard_html[];
extern const size_t assets_dashboard_html_len;
extern const char assets_init_db_sql[];
extern const size_t assets_init_db_sql_len;

#endif
