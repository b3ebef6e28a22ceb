-- bulkhead schema and seed data. Idempotent: safe to apply to an existing database.
--
-- tenant_data is the seed's table (id, tier, payload jsonb, created_at) plus the owning tenant.
-- tenants holds API keys as SHA-256 hashes only, and each tenant's overrides (see
-- `bulkhead tenant --help`); tenant_audit records every change to them.

-- begin: tenants schema
-- The server (AUTH_MODE=apikey or ADMIN_TOKEN set) and `bulkhead tenant` apply this part to a
-- database that lacks any of it, so an existing database gains what a newer bulkhead needs
-- without a restart of PostgreSQL or a manual step. Only idempotent statements go here.
CREATE TABLE IF NOT EXISTS tenants (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9._-]{1,64}$'),
    tier        text NOT NULL CHECK (tier ~ '^[a-z0-9_-]{1,32}$'),
    key_hash    text NOT NULL UNIQUE CHECK (key_hash ~ '^[0-9a-f]{64}$'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
-- The tenant's overrides of its tier's settings; NULL: the tier's value applies.
ALTER TABLE tenants ADD COLUMN IF NOT EXISTS rate_limit bigint
    CHECK (rate_limit BETWEEN 0 AND 1000000000);
ALTER TABLE tenants ADD COLUMN IF NOT EXISTS db_time_ms_per_min bigint
    CHECK (db_time_ms_per_min BETWEEN 0 AND 100000000);

-- One row per change made by `bulkhead tenant` or the admin API, written in the change's own
-- transaction: who (the admin token's id or "cli:<user>"), from where, what, and the tenant
-- before and after (never a key or its hash).
CREATE TABLE IF NOT EXISTS tenant_audit (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    address     text NOT NULL,
    action      text NOT NULL,
    tenant      text NOT NULL,
    before      jsonb,
    after       jsonb,
    request_id  text
);
CREATE INDEX IF NOT EXISTS tenant_audit_tenant_id ON tenant_audit (tenant, id);
-- end: tenants schema

CREATE TABLE IF NOT EXISTS tenant_data (
    id          bigserial PRIMARY KEY,
    tier        varchar(32) NOT NULL,
    tenant      text CHECK (tenant ~ '^[A-Za-z0-9._-]{1,64}$'),
    payload     jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);
-- An older copy of the seed's table has no tenant column.
ALTER TABLE tenant_data ADD COLUMN IF NOT EXISTS tenant text
    CHECK (tenant ~ '^[A-Za-z0-9._-]{1,64}$');

-- Reads are "this tier's (or tenant's) rows after a cursor, in id order".
CREATE INDEX IF NOT EXISTS tenant_data_tier_id ON tenant_data (tier, id);
CREATE INDEX IF NOT EXISTS tenant_data_tenant_id ON tenant_data (tenant, id) WHERE tenant IS NOT NULL;

-- Seed rows, as the reference design has: a few per tier, only into an empty table.
INSERT INTO tenant_data (tier, payload)
SELECT t.tier, jsonb_build_object('item', g, 'description', t.tier || ' sample record ' || g)
FROM (VALUES ('free'), ('pro'), ('enterprise')) AS t(tier), generate_series(1, 10) AS g
WHERE NOT EXISTS (SELECT 1 FROM tenant_data);
