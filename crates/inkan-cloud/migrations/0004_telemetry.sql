-- OSCORE state of each session (RFC 8613): the master secret and salt from
-- the EDHOC exporter, wrapped under a key derived from the cloud key (every
-- replica holds it), and the recipient replay window, advanced in the same
-- transaction that stores what a request carried. The session's kid is its
-- C_R. A session ends at `expires` or when its device is revoked.
ALTER TABLE sessions ADD COLUMN oscore BYTEA;
ALTER TABLE sessions ADD COLUMN expires BIGINT;
ALTER TABLE sessions ADD COLUMN replay_high BIGINT;
ALTER TABLE sessions ADD COLUMN replay_bits BIGINT;
CREATE INDEX sessions_c_r ON sessions (c_r);

-- Sensor readings, stored before the device gets its acknowledgement.
-- (device_id, session_id, piv, idx) identifies a reading: the request's
-- Partial IV and its place in the batch.
CREATE TABLE readings (
    device_id   TEXT NOT NULL REFERENCES devices(id),
    session_id  TEXT NOT NULL,
    piv         BIGINT NOT NULL,
    idx         BIGINT NOT NULL,
    time        BIGINT NOT NULL,
    channel     BIGINT NOT NULL,
    value       BYTEA NOT NULL,
    received    BIGINT NOT NULL,
    PRIMARY KEY (device_id, session_id, piv, idx)
);
CREATE INDEX readings_time ON readings (device_id, time);
