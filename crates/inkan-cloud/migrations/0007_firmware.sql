-- Firmware a tenant uploaded for a family: the OEM-signed manifest (checked
-- against the firmware key and the family before it is accepted) and the
-- image, served block-wise to the family's devices over OSCORE.
CREATE TABLE firmware (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants(id),
    family_id        TEXT NOT NULL REFERENCES families(id),
    version          TEXT NOT NULL,
    security_version BIGINT NOT NULL,
    manifest         BYTEA NOT NULL,
    image            BYTEA NOT NULL,
    created          BIGINT NOT NULL
);
