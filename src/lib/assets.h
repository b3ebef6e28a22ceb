/*
 * assets: files compiled into the binary, so it runs from anywhere with no data directory.
 *
 * config/tiers.json (the built-in tier table), the live dashboard (web/: the page
 * dashboard.html, its style dashboard.css and its scripts dashboard-*.js, which api.c serves
 * under /dashboard/) and init-db.sql (the schema, whose tenants part the server applies to an
 * older database) are embedded by assets.c with the assembler's .incbin; the Makefile rebuilds
 * it when any of them changes. Each blob is followed by a NUL byte, which the _len excludes.
 */
#ifndef BULKHEAD_ASSETS_H
#define BULKHEAD_ASSETS_H

#include <stddef.h>

extern const char assets_tiers_json[];
extern const size_t assets_tiers_json_len;
extern const char assets_dashboard_html[];
extern const size_t assets_dashboard_html_len;
extern const char assets_dashboard_css[];
extern const size_t assets_dashboard_css_len;
extern const char assets_dashboard_state_js[];
extern const size_t assets_dashboard_state_js_len;
extern const char assets_dashboard_tiers_js[];
extern const size_t assets_dashboard_tiers_js_len;
extern const char assets_dashboard_charts_js[];
extern const size_t assets_dashboard_charts_js_len;
extern const char assets_dashboard_fleet_js[];
extern const size_t assets_dashboard_fleet_js_len;
extern const char assets_dashboard_tenants_js[];
extern const size_t assets_dashboard_tenants_js_len;
extern const char assets_dashboard_page_js[];
extern const size_t assets_dashboard_page_js_len;
extern const char assets_init_db_sql[];
extern const size_t assets_init_db_sql_len;

#endif
