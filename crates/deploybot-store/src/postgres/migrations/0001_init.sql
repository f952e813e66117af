-- DeployBot PostgreSQL schema, version 1: what SQLite's 0001_init and 0002_auth
-- hold, in one file (nothing PostgreSQL had shipped before). Never edit this
-- file once shipped: add 0002_….sql. Times are Unix milliseconds (UTC); JSON
-- is kept as text, exactly as the code wrote it, like the SQLite backend does.

-- Repository names compare case-insensitively (SQLite: COLLATE NOCASE).
CREATE COLLATION deploybot_nocase (provider = icu, locale = 'und-u-ks-level2', deterministic = false);

CREATE TABLE agents (
    id             TEXT PRIMARY KEY,
    hostname       TEXT NOT NULL UNIQUE,
    capabilities   TEXT NOT NULL DEFAULT '[]',       -- JSON array of strings
    status         TEXT NOT NULL DEFAULT 'online',   -- as last reported
    registered_at  BIGINT NOT NULL,
    last_heartbeat BIGINT,
    -- The agent's current token; NULL once an admin revoked the agent. Every
    -- registration replaces it, so the previous session's token stops working.
    token_hash     TEXT
);
CREATE UNIQUE INDEX agents_by_token ON agents (token_hash) WHERE token_hash IS NOT NULL;

CREATE TABLE jobs (
    seq            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- creation order
    id             TEXT NOT NULL UNIQUE,
    app            TEXT NOT NULL,
    repo           TEXT NOT NULL COLLATE deploybot_nocase,
    git_ref        TEXT NOT NULL,
    sha            TEXT,
    host           TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN
                     ('pending', 'running', 'success', 'failed', 'cancelled', 'superseded', 'lost')),
    metadata       TEXT NOT NULL DEFAULT '{}',       -- JSON object
    deploy         TEXT NOT NULL,                    -- JSON DeploySpec
    source         TEXT NOT NULL CHECK (source IN ('webhook', 'manual', 'retry')),
    delivery_id    TEXT,
    attempt        BIGINT NOT NULL DEFAULT 1,
    created_at     BIGINT NOT NULL,
    started_at     BIGINT,
    completed_at   BIGINT,
    assigned_agent TEXT,
    exit_code      INTEGER,
    error          TEXT,
    superseded_by  TEXT,
    lease          BIGINT,                           -- set when handed out; writes must name it
    cancel_requested BOOLEAN NOT NULL DEFAULT false, -- the agent is told to stop
    retry_of       TEXT                              -- the job this one retries
);

-- The queue's core rule, enforced by the database: a host runs one job at a
-- time, whichever controller instance hands it out.
CREATE UNIQUE INDEX jobs_one_running_per_host ON jobs (host) WHERE status = 'running';
-- Pending jobs by host, oldest first: claims, supersede, idempotency. Holds
-- only pending rows, so neither cost grows with history.
CREATE INDEX jobs_pending_by_host ON jobs (host, seq) WHERE status = 'pending';
-- Newest push wins: a new job supersedes the pending ones of its app and
-- host, so at most one is pending.
CREATE UNIQUE INDEX jobs_one_pending_per_app ON jobs (host, app) WHERE status = 'pending';
-- Listing filters, newest first.
CREATE INDEX jobs_by_host ON jobs (host, seq);
CREATE INDEX jobs_by_app ON jobs (app, seq);
-- Webhook jobs by commit: a push of a sha an app already got on a host by
-- webhook creates nothing, whatever its delivery id (that header is not
-- signed, so a captured delivery could otherwise be replayed).
CREATE UNIQUE INDEX jobs_webhook_by_sha ON jobs (sha, app, host) WHERE source = 'webhook';

CREATE TABLE deliveries (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id  TEXT NOT NULL UNIQUE,
    event        TEXT NOT NULL,
    repo         TEXT,
    git_ref      TEXT,
    sha          TEXT,
    verdict      TEXT NOT NULL,
    message      TEXT NOT NULL,
    job_ids      TEXT NOT NULL DEFAULT '[]',         -- JSON array of job ids
    received_at  BIGINT NOT NULL
);

-- Deploy output. `id` orders all lines and is the SSE event id; (job_id, line)
-- makes a retried upload idempotent.
CREATE TABLE job_logs (
    id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id  TEXT NOT NULL,
    line    BIGINT NOT NULL,
    stream  TEXT NOT NULL CHECK (stream IN ('stdout', 'stderr')),
    at      BIGINT NOT NULL,
    text    TEXT NOT NULL,
    UNIQUE (job_id, line)
);

-- API and enrollment tokens. Only hex SHA-256 hashes are stored.
CREATE TABLE tokens (
    id          TEXT PRIMARY KEY,                    -- public id, safe to log
    hash        TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('read', 'deploy', 'admin', 'enroll')),
    apps        TEXT,                                -- JSON array; NULL: every app
    single_use  BOOLEAN NOT NULL DEFAULT false,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT,
    used_at     BIGINT,                              -- a single-use token's one use
    revoked_at  BIGINT
);

CREATE TABLE audit (
    id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at       BIGINT NOT NULL,
    actor    TEXT NOT NULL,
    action   TEXT NOT NULL,
    target   TEXT NOT NULL,
    address  TEXT,
    result   TEXT NOT NULL
);
