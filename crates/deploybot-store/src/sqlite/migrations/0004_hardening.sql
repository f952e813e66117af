-- DeployBot schema, version 4: enrollment tokens made for one host, and the
-- bytes of output stored per job (which are capped). Never edit once shipped.

-- An enrollment token made for one host (`deploybot agents replace HOST`)
-- may register that host even while it has an agent; NULL: any new host.
ALTER TABLE tokens ADD COLUMN hostname TEXT;

-- The bytes of output stored for the job so far, and, once they reached
-- the cap, the first line number not stored (a marker line holds it).
ALTER TABLE jobs ADD COLUMN log_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN log_cut_at INTEGER;
