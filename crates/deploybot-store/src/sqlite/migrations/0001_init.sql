-- DeployBot schema, version 1. Never edit this file once shipped: add 0002_….sql.
-- Times are Unix milliseconds (UTC).

CREATE TABLE agents (
    id             TEXT PRIMARY KEY NOT NULL,
    hostname       TEXT NOT NULL UNIQUE,
    capabilities   TEXT NOT NULL DEFAULT '[]',       -- JSON array of strings
    status         TEXT NOT NULL DEFAULT 'online',   -- as last reported
    registered_at  INTEGER NOT NULL,
    last_heartbeat INTEGER
) STRICT;

CREATE TABLE jobs (
    seq            INTEGER PRIMARY KEY,              -- creation order
    id             TEXT NOT NULL UNIQUE,
    app            TEXT NOT NULL,
    repo           TEXT NOT NULL COLLATE NOCASE,
    git_ref        TEXT NOT NULL,
    sha            TEXT,
    host           TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN
                     ('pending', 'running', 'success', 'failed', 'cancelled', 'superseded', 'lost')),
    metadata       TEXT NOT NULL DEFAULT '{}',       -- JSON object
    deploy         TEXT NOT NULL,                    -- JSON DeploySpec
    source         TEXT NOT NULL CHECK (source IN ('webhook', 'manual', 'retry')),
    delivery_id    TEXT,
    attempt        INTEGER NOT NULL DEFAULT 1,
    created_at     INTEGER NOT NULL,
    started_at     INTEGER,
    completed_at   INTEGER,
    assigned_agent TEXT,
    exit_code      INTEGER,
    error          TEXT,
    superseded_by  TEXT,
    lease          INTEGER,                          -- set when handed out; writes must name it
    cancel_requested INTEGER NOT NULL DEFAULT 0,     -- 1: the agent is told to stop
    retry_of       TEXT                              -- the job this one retries
) STRICT;

-- The queue's core rule, enforced by the database: a host runs one job at a time.
-- Also the index of running jobs (idempotency, host summaries, status=running).
CREATE UNIQUE INDEX jobs_one_running_per_host ON jobs (host) WHERE status = 'running';
-- Pending jobs by host, oldest first: dispatch, supersede, idempotency. Holds
-- only pending rows, so neither cost grows with history.
CREATE INDEX jobs_pending_by_host ON jobs (host, seq) WHERE status = 'pending';
-- Listing filters, newest first. (Status and repo filters scan by seq: an
-- index each would slow every insert for a rarely used filter.)
CREATE INDEX jobs_by_host ON jobs (host, seq);
CREATE INDEX jobs_by_app ON jobs (app, seq);

CREATE TABLE deliveries (
    seq          INTEGER PRIMARY KEY,
    delivery_id  TEXT NOT NULL UNIQUE,
    event        TEXT NOT NULL,
    repo         TEXT,
    git_ref      TEXT,
    sha          TEXT,
    verdict      TEXT NOT NULL,
    message      TEXT NOT NULL,
    job_ids      TEXT NOT NULL DEFAULT '[]',         -- JSON array of job ids
    received_at  INTEGER NOT NULL
) STRICT;

-- Deploy output. `id` orders all lines and is the SSE event id; (job_id, line)
-- makes a retried upload idempotent.
CREATE TABLE job_logs (
    id      INTEGER PRIMARY KEY,
    job_id  TEXT NOT NULL,
    line    INTEGER NOT NULL,
    stream  TEXT NOT NULL CHECK (stream IN ('stdout', 'stderr')),
    at      INTEGER NOT NULL,
    text    TEXT NOT NULL,
    UNIQUE (job_id, line)
) STRICT;
