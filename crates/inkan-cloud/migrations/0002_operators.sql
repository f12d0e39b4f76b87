-- Operator API tokens: only a SHA-256 of the secret is stored.
CREATE TABLE api_tokens (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    hash        TEXT NOT NULL,
    role        TEXT NOT NULL,
    created     BIGINT NOT NULL,
    last_used   BIGINT
);
