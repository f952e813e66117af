-- DeployBot schema on PostgreSQL, version 4: enrollment tokens made for one
-- host, and the bytes of output stored per job (which are capped). Never
-- edit once shipped.

-- An enrollment token made for one host (`deploybot agents replace HOST`)
-- may register that host even while it has an agent; NULL: any new host.
ALTER TABLE tokens ADD COLUMN hostname TEXT;

-- The bytes of output stored for the job so far.
ALTER TABLE jobs ADD COLUMN log_bytes BIGINT NOT NULL DEFAULT 0;
