/*
 * assets: embed config/tiers.json, the dashboard's files (web/) and init-db.sql (see assets.h).
 *
 * ASSET_ROOT is the checkout's root, passed by the Makefile, so the paths do not depend on the
 * directory the compiler runs in. The assembler also records each blob's length, so no code runs
 * to find it.
 */
#include "assets.h"

#ifndef ASSET_ROOT
#error "ASSET_ROOT must be defined by the build"
#endif

#define ASSETS_EMBED(sym, file)                                                                    \
    __asm__(".section .rodata\n"                                                                   \
            ".global " #sym "\n"                                                                   \
            ".type " #sym ", @object\n"                                                            \
            ".balign 16\n" #sym ":\n"                                                              \
            ".incbin \"" ASSET_ROOT "/" file "\"\n" #sym "_end:\n"                                 \
            ".byte 0\n"                                                                            \
            ".balign 8\n"                                                                          \
            ".global " #sym "_len\n"                                                               \
            ".type " #sym "_len, @object\n" #sym "_len:\n"                                         \
            ".quad " #sym "_end - " #sym "\n"                                                      \
            ".previous\n")

ASSETS_EMBED(assets_tiers_json, "config/tiers.json");
ASSETS_EMBED(assets_dashboard_html, "web/dashboard.html");
ASSETS_EMBED(assets_dashboard_css, "web/dashboard.css");
ASSETS_EMBED(assets_dashboard_state_js, "web/dashboard-state.js");
ASSETS_EMBED(assets_dashboard_tiers_js, "web/dashboard-tiers.js");
ASSETS_EMBED(assets_dashboard_charts_js, "web/dashboard-charts.js");
ASSETS_EMBED(assets_dashboard_fleet_js, "web/dashboard-fleet.js");
ASSETS_EMBED(assets_dashboard_tenants_js, "web/dashboard-tenants.js");
ASSETS_EMBED(assets_dashboard_page_js, "web/dashboard-page.js");
ASSETS_EMBED(assets_init_db_sql, "init-db.sql");
