-- Per family, readings can be required to come signed by the device's
-- secure element (COSE_Sign1 over the batch, with the device key): the
-- signature is kept with the records it covers, for non-repudiation.
ALTER TABLE families ADD COLUMN signed_readings BIGINT NOT NULL DEFAULT 0;
CREATE TABLE reading_signatures (
    device_id   TEXT NOT NULL REFERENCES devices(id),
    session_id  TEXT NOT NULL,
    piv         BIGINT NOT NULL,
    cose        BYTEA NOT NULL,
    PRIMARY KEY (device_id, session_id, piv)
);
