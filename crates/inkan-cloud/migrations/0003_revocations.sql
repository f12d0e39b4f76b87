-- The revocation list of each family: certificates revoked by an operator
-- in the cloud, and those listed by a CRL the family CA signed and an
-- operator imported. A revoked certificate stays out even when its device
-- never authenticated (no device row yet).
CREATE TABLE revocations (
    family_id     TEXT NOT NULL REFERENCES families(id),
    cert_serial   TEXT NOT NULL,
    device_serial TEXT,
    source        TEXT NOT NULL,
    time          BIGINT NOT NULL,
    PRIMARY KEY (family_id, cert_serial)
);

-- The number of the newest CRL imported for a family: an older one is
-- refused, so a stale list cannot be replayed.
ALTER TABLE families ADD COLUMN crl_number BIGINT;
