-- Units of use a device's chip reported left (its one-way usage counter),
-- the first value seen and when the last came; per family, the level
-- below which a report raises an alert in the audit log.
CREATE TABLE device_usage (
    device_id TEXT PRIMARY KEY REFERENCES devices(id),
    tenant_id TEXT NOT NULL,
    family_id TEXT,
    remaining BIGINT NOT NULL,
    first_remaining BIGINT NOT NULL,
    reports BIGINT NOT NULL,
    reported_at BIGINT NOT NULL
);
CREATE INDEX device_usage_family ON device_usage (family_id);
ALTER TABLE families ADD COLUMN usage_alert_below BIGINT;
