-- Operator tokens expire and can be revoked; their use is recorded.
ALTER TABLE api_tokens ADD COLUMN expires BIGINT;
ALTER TABLE api_tokens ADD COLUMN revoked BIGINT;
-- How many times a command was delivered without a result: after a few,
-- the device evidently cannot take it (unparseable, or it crashes on it),
-- and the command stops blocking the ones queued behind it.
ALTER TABLE commands ADD COLUMN deliveries BIGINT NOT NULL DEFAULT 0;
