-- Device lifecycle: one identity per device for life (its UEID is the
-- device id of devices personalized since this version; older rows keep
-- their id), its certificates and keys as credentials with a history,
-- every lifecycle transition recorded, ownership that moves by signed
-- transfers, and decommissioning.
--
-- The devices table keeps the certificate the device was registered or
-- enrolled with (its initial identity, for the record); authentication
-- goes through `credentials` only.

-- Every credential a device has held. A credential authenticates only
-- while `state` is 'active'; 'retired' and 'revoked' ones are refused.
CREATE TABLE credentials (
    id          TEXT PRIMARY KEY,
    device_id   TEXT NOT NULL REFERENCES devices(id),
    fingerprint TEXT NOT NULL UNIQUE,
    certificate BYTEA NOT NULL,
    public_key  BYTEA NOT NULL,
    state       TEXT NOT NULL,
    created     BIGINT NOT NULL,
    changed     BIGINT NOT NULL,
    last_used   BIGINT
);
CREATE INDEX credentials_device ON credentials (device_id);
INSERT INTO credentials (id, device_id, fingerprint, certificate, public_key, state, created, changed)
    SELECT id, id, fingerprint, certificate, public_key,
           CASE WHEN status = 'revoked' THEN 'revoked' ELSE 'active' END,
           created, created
    FROM devices;

-- What proves the owner's claim: 'family' (the family was registered with
-- proof of possession), 'issuer' (proof of possession of the issuing CA
-- key), 'transfer' (signed by the previous owner), or 'none' (a claim made
-- from public data before claims needed proof; the family's owner
-- reclaims such devices).
ALTER TABLE devices ADD COLUMN proof TEXT NOT NULL DEFAULT 'none';
UPDATE devices SET proof = 'family' WHERE enrolled_by = 'family';
-- A decommissioned device told to erase its secrets, until it confirms.
ALTER TABLE devices ADD COLUMN erase_pending BIGINT NOT NULL DEFAULT 0;
CREATE INDEX devices_serial_only ON devices (serial);

-- The session's credential: which credential was used when.
ALTER TABLE sessions ADD COLUMN credential_id TEXT;

-- Lifecycle transitions and other events of a device, in time order: the
-- device's history (the audit log has them too, per tenant).
CREATE TABLE device_events (
    id          TEXT PRIMARY KEY,
    device_id   TEXT NOT NULL REFERENCES devices(id),
    tenant_id   TEXT NOT NULL,
    time        BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    from_state  TEXT,
    to_state    TEXT,
    actor       TEXT NOT NULL,
    reason      TEXT NOT NULL
);
CREATE INDEX device_events_device ON device_events (device_id, time);

-- Signed transfers claimed: each document once.
CREATE TABLE transfers (
    id          TEXT PRIMARY KEY,
    family_id   TEXT NOT NULL REFERENCES families(id),
    from_tenant TEXT NOT NULL REFERENCES tenants(id),
    to_tenant   TEXT NOT NULL REFERENCES tenants(id),
    devices     BIGINT NOT NULL,
    document    BYTEA NOT NULL,
    claimed     BIGINT NOT NULL
);
