-- Update campaigns: a firmware rolled out to a family's devices (all, a
-- list, or a percentage) in stages; a stage opens when the previous one
-- finished, and the campaign stops by itself when the failure rate of a
-- stage crosses its threshold.
CREATE TABLE campaigns (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    firmware_id TEXT NOT NULL REFERENCES firmware(id),
    stages      BIGINT NOT NULL,
    stage       BIGINT NOT NULL,
    threshold   BIGINT NOT NULL,
    state       TEXT NOT NULL,
    created     BIGINT NOT NULL,
    detail      TEXT
);
CREATE TABLE campaign_devices (
    campaign_id TEXT NOT NULL REFERENCES campaigns(id),
    device_id   TEXT NOT NULL REFERENCES devices(id),
    stage       BIGINT NOT NULL,
    state       TEXT NOT NULL,
    detail      TEXT,
    updated     BIGINT NOT NULL,
    PRIMARY KEY (campaign_id, device_id)
);
ALTER TABLE devices ADD COLUMN firmware_version TEXT;
