-- Commands to actuators: the signed COSE_Sign1 as delivered, and its state:
-- queued -> delivered -> succeeded / failed / refused, or expired. A
-- delivered command without a result is delivered again on the next poll;
-- the device runs an id at most once.
CREATE TABLE commands (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    device_id   TEXT NOT NULL REFERENCES devices(id),
    action      TEXT NOT NULL,
    cose        BYTEA NOT NULL,
    state       TEXT NOT NULL,
    created     BIGINT NOT NULL,
    expires     BIGINT NOT NULL,
    delivered   BIGINT,
    finished    BIGINT,
    result      TEXT
);
CREATE INDEX commands_device ON commands (device_id, state, created);
