-- DeployBot schema on PostgreSQL, version 2: the trace of the request that
-- created a job. Never edit once shipped.

-- W3C `traceparent` of the request that created the job (NULL when tracing
-- is off): the agent sends it with its reports, so they join that trace.
ALTER TABLE jobs ADD COLUMN traceparent TEXT;
