-- DeployBot schema, version 2: credentials, the audit log, webhook replay
-- protection. Never edit
-- once shipped. Tokens are stored only as hex SHA-256 hashes.

-- The agent's current token; NULL once an admin revoked the agent. Every
-- registration replaces it, so the previous session's token stops working.
ALTER TABLE agents ADD COLUMN token_hash TEXT;
CREATE UNIQUE INDEX agents_by_token ON agents (token_hash) WHERE token_hash IS NOT NULL;

-- API and enrollment tokens.
CREATE TABLE tokens (
    id          TEXT PRIMARY KEY NOT NULL,           -- public id, safe to log
    hash        TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('read', 'deploy', 'admin', 'enroll')),
    apps        TEXT,                                -- JSON array; NULL: every app
    single_use  INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER,
    used_at     INTEGER,                             -- a single-use token's one use
    revoked_at  INTEGER
) STRICT;

-- Webhook jobs by commit: a push of a sha an app already got on a host by
-- webhook creates nothing, whatever its delivery id (that header is not
-- signed, so a captured delivery could otherwise be replayed).
CREATE INDEX jobs_webhook_by_sha ON jobs (sha, app, host) WHERE source = 'webhook';

CREATE TABLE audit (
    id       INTEGER PRIMARY KEY,
    at       INTEGER NOT NULL,
    actor    TEXT NOT NULL,
    action   TEXT NOT NULL,
    target   TEXT NOT NULL,
    address  TEXT,
    result   TEXT NOT NULL
) STRICT;
