-- DeployBot schema on PostgreSQL, version 3: webhook ingestion in one call.
-- Never edit once shipped. To change what ingestion does, add a function of
-- a new name (deploybot_ingest_v2) in a new migration: instances of the old
-- and the new version then run side by side during an upgrade.

-- Records a batch of webhook deliveries, in order, each exactly as if it
-- came alone: a delivery id seen before creates nothing and answers the
-- first reception's jobs; a webhook job whose commit this app already got
-- on this host by webhook is that job; an open job with the same app, repo,
-- ref, sha and host is that job (the pending one first); otherwise the new
-- job supersedes the app's pending job on the host (the newest push wins).
-- Each new delivery is recorded with its job ids, and one that has jobs gets
-- its audit entry.
--
-- The controller groups the deliveries that arrive while it commits (group
-- commit), so this decides delivery after delivery but writes once at the
-- end: one insert of all new jobs, each already in its final state (a job
-- the batch supersedes again is stored superseded, not pending and then
-- updated), one of the deliveries, one of the audit entries.
--
-- `lock_spaces`/`lock_keys` are advisory lock keys, taken first and in the
-- given order: the caller sorts them, so two batches (or a batch and another
-- write) never wait for each other in a cycle. They cover every delivery id
-- and every app on a host in the batch, so nothing read below about those
-- changes until the batch commits, except that an agent may claim (or an
-- admin cancel) a pending job committed before.
--
-- `batch` is an array of {id, event, repo, git_ref, sha, verdict,
-- message, address, jobs: [{id, app, repo, git_ref, sha, host, metadata,
-- deploy, source, delivery_id, attempt, retry_of, traceparent}]}; metadata
-- and deploy are JSON documents as text, stored as they are.
--
-- One row per delivery: its place in `batch`, whether it was a redelivery,
-- its verdict, message and job ids (a JSON array) as recorded, and the
-- hosts that got a new pending job.
--
-- PostgreSQL plans these statements once per connection and keeps the
-- plans; on a young table (no statistics yet) it cannot tell a lookup of one
-- row from a walk through an app's or a host's whole history (jobs_by_app,
-- jobs_by_host), and it took the walk for a lookup by commit, app and host.
-- So webhook jobs are looked up by commit alone (only jobs_webhook_by_sha
-- holds it), and committed pending jobs are locked and superseded by id
-- alone (a status condition would let a pending index serve that).
CREATE FUNCTION deploybot_ingest_v1(lock_spaces int4[], lock_keys int4[], batch jsonb, now_ms bigint)
RETURNS TABLE (ordinal bigint, duplicate boolean, verdict text, message text, job_ids text, new_hosts text[])
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    d record;
    j record;
    i int;
    ids text[];
    hosts text[];
    key text;
    -- Deliveries this batch records: id, verdict, message, job ids (JSON).
    recorded_ids text[] := '{}';
    recorded_verdicts text[] := '{}';
    recorded_messages text[] := '{}';
    recorded_job_ids text[] := '{}';
    -- Webhook jobs by commit (key: sha US app US host), committed or new,
    -- for every commit looked up so far (`shas`).
    shas text[] := '{}';
    webhook_keys text[] := '{}';
    webhook_ids text[] := '{}';
    -- Each app on a host the batch touched (key: host US app), its pending
    -- job (NULL: none) with what makes a deploy the same, and that job's
    -- place among the new jobs (NULL: committed before this batch).
    pairs text[] := '{}';
    pending_ids text[] := '{}';
    pending_repos text[] := '{}';
    pending_refs text[] := '{}';
    pending_shas text[] := '{}';
    pending_new int[] := '{}';
    -- New jobs, in order, and how they end the batch.
    new_jobs jsonb[] := '{}';
    new_superseded_by text[] := '{}';
    -- Committed pending jobs the batch supersedes, and by which new job.
    old_ids text[] := '{}';
    old_by text[] := '{}';
    -- The new deliveries (as given) with their job ids, for the inserts.
    new_deliveries jsonb[] := '{}';
    new_job_ids text[] := '{}';
    new_counts int[] := '{}';
    known record;
    pending record;
    open_id text;
    current_status text;
BEGIN
    PERFORM count(pg_advisory_xact_lock(l.space, l.key))
    FROM unnest(lock_spaces, lock_keys) AS l(space, key);

    FOR d IN
        SELECT x.ordinality, x.value, x.value->>'id' AS id, x.value->'jobs' AS jobs
        FROM jsonb_array_elements(batch) WITH ORDINALITY AS x
        ORDER BY x.ordinality
    LOOP
        ordinal := d.ordinality;
        i := array_position(recorded_ids, d.id);
        IF i IS NOT NULL THEN
            duplicate := true;
            verdict := recorded_verdicts[i];
            message := recorded_messages[i];
            job_ids := recorded_job_ids[i];
            new_hosts := '{}';
            RETURN NEXT;
            CONTINUE;
        END IF;
        SELECT s.verdict, s.message, s.job_ids INTO verdict, message, job_ids
        FROM deliveries AS s WHERE s.delivery_id = d.id;
        IF FOUND THEN
            duplicate := true;
            new_hosts := '{}';
            RETURN NEXT;
            CONTINUE;
        END IF;

        ids := '{}';
        hosts := '{}';
        FOR j IN
            SELECT y.ordinality, y.value, y.value->>'id' AS id, y.value->>'app' AS app,
                   y.value->>'repo' AS repo, y.value->>'git_ref' AS git_ref,
                   y.value->>'sha' AS sha, y.value->>'host' AS host, y.value->>'source' AS source
            FROM jsonb_array_elements(d.jobs) WITH ORDINALITY AS y
            ORDER BY y.ordinality
        LOOP
            -- This commit already deployed this app on this host by webhook.
            IF j.sha IS NOT NULL THEN
                IF array_position(shas, j.sha) IS NULL THEN
                    -- By commit alone (see above).
                    SELECT coalesce(array_agg(o.sha || chr(31) || o.app || chr(31) || o.host), '{}') AS known_keys,
                           coalesce(array_agg(o.id), '{}') AS known_ids
                    INTO known
                    FROM jobs AS o WHERE o.source = 'webhook' AND o.sha = j.sha;
                    shas := shas || j.sha;
                    webhook_keys := webhook_keys || known.known_keys;
                    webhook_ids := webhook_ids || known.known_ids;
                END IF;
                i := array_position(webhook_keys, j.sha || chr(31) || j.app || chr(31) || j.host);
                IF i IS NOT NULL THEN
                    ids := ids || webhook_ids[i];
                    CONTINUE;
                END IF;
            END IF;

            key := j.host || chr(31) || j.app;
            i := array_position(pairs, key);
            IF i IS NULL THEN
                -- At most one row (jobs_one_pending_per_app).
                SELECT o.id, o.repo, o.git_ref, o.sha INTO pending FROM jobs AS o
                WHERE o.host = j.host AND o.status = 'pending' AND o.app = j.app;
                pairs := pairs || key;
                pending_ids := pending_ids || pending.id;
                pending_repos := pending_repos || pending.repo;
                pending_refs := pending_refs || pending.git_ref;
                pending_shas := pending_shas || pending.sha;
                pending_new := pending_new || NULL::int;
                i := cardinality(pairs);
            END IF;
            -- The same deploy is open already: the pending one first, then
            -- the host's running one (jobs_one_running_per_host).
            IF pending_ids[i] IS NOT NULL
               AND pending_repos[i] = j.repo COLLATE deploybot_nocase
               AND pending_refs[i] = j.git_ref
               AND pending_shas[i] IS NOT DISTINCT FROM j.sha THEN
                ids := ids || pending_ids[i];
                CONTINUE;
            END IF;
            SELECT r.id INTO open_id FROM jobs AS r
            WHERE r.host = j.host AND r.status = 'running' AND r.app = j.app
              AND r.repo = j.repo AND r.git_ref = j.git_ref AND r.sha IS NOT DISTINCT FROM j.sha;
            IF FOUND THEN
                ids := ids || open_id;
                CONTINUE;
            END IF;

            -- Newest push wins.
            IF pending_new[i] IS NOT NULL THEN
                new_superseded_by[pending_new[i]] := j.id;
            ELSIF pending_ids[i] IS NOT NULL THEN
                old_ids := old_ids || pending_ids[i];
                old_by := old_by || j.id;
            END IF;
            new_jobs := new_jobs || j.value;
            new_superseded_by := new_superseded_by || NULL::text;
            pending_ids[i] := j.id;
            pending_repos[i] := j.repo;
            pending_refs[i] := j.git_ref;
            pending_shas[i] := j.sha;
            pending_new[i] := cardinality(new_jobs);
            IF j.source = 'webhook' AND j.sha IS NOT NULL THEN
                webhook_keys := webhook_keys || (j.sha || chr(31) || j.app || chr(31) || j.host);
                webhook_ids := webhook_ids || j.id;
            END IF;
            ids := ids || j.id;
            hosts := hosts || j.host;
        END LOOP;

        job_ids := array_to_json(ids)::text;
        recorded_ids := recorded_ids || d.id;
        recorded_verdicts := recorded_verdicts || (d.value->>'verdict');
        recorded_messages := recorded_messages || (d.value->>'message');
        recorded_job_ids := recorded_job_ids || job_ids;
        new_deliveries := new_deliveries || d.value;
        new_job_ids := new_job_ids || job_ids;
        new_counts := new_counts || cardinality(ids);
        duplicate := false;
        verdict := d.value->>'verdict';
        message := d.value->>'message';
        new_hosts := hosts;
        RETURN NEXT;
    END LOOP;

    -- Committed pending jobs, by id (see above), unless an agent claimed
    -- them (or an admin cancelled them) since they were read.
    FOR i IN 1 .. cardinality(old_ids) LOOP
        SELECT o.status INTO current_status FROM jobs AS o WHERE o.id = old_ids[i] FOR UPDATE;
        IF current_status = 'pending' THEN
            UPDATE jobs AS o SET status = 'superseded', superseded_by = old_by[i],
                completed_at = now_ms, error = 'superseded by newer job ' || old_by[i]
            WHERE o.id = old_ids[i];
        END IF;
    END LOOP;

    INSERT INTO jobs (id, app, repo, git_ref, sha, host, status, metadata, deploy, source,
                      delivery_id, attempt, created_at, completed_at, error, superseded_by,
                      retry_of, traceparent)
    SELECT n.job->>'id', n.job->>'app', n.job->>'repo', n.job->>'git_ref', n.job->>'sha',
           n.job->>'host', CASE WHEN n.superseded_by IS NULL THEN 'pending' ELSE 'superseded' END,
           n.job->>'metadata', n.job->>'deploy', n.job->>'source', n.job->>'delivery_id',
           (n.job->>'attempt')::bigint, now_ms,
           CASE WHEN n.superseded_by IS NOT NULL THEN now_ms END,
           'superseded by newer job ' || n.superseded_by, n.superseded_by,
           n.job->>'retry_of', n.job->>'traceparent'
    FROM unnest(new_jobs, new_superseded_by) WITH ORDINALITY AS n(job, superseded_by, place)
    ORDER BY n.place;

    INSERT INTO deliveries (delivery_id, event, repo, git_ref, sha, verdict, message, job_ids, received_at)
    SELECT n.delivery->>'id', n.delivery->>'event', n.delivery->>'repo', n.delivery->>'git_ref',
           n.delivery->>'sha', n.delivery->>'verdict', n.delivery->>'message', n.job_ids, now_ms
    FROM unnest(new_deliveries, new_job_ids) WITH ORDINALITY AS n(delivery, job_ids, place)
    ORDER BY n.place;

    -- The audit trail of webhook deploys, in the same transaction.
    INSERT INTO audit (at, actor, action, target, address, result)
    SELECT now_ms, 'webhook:' || (n.delivery->>'id'), 'deploy',
           format('%s@%s: %s job(s)', coalesce(n.delivery->>'repo', '?'),
                  coalesce(n.delivery->>'sha', '?'), n.jobs),
           n.delivery->>'address', 'ok'
    FROM unnest(new_deliveries, new_counts) WITH ORDINALITY AS n(delivery, jobs, place)
    WHERE n.jobs > 0
    ORDER BY n.place;
END
$$;
