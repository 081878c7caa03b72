-- Commands accepted for later (run_at or delay_ms) wait here rather than in RabbitMQ: a row
-- answers GET /v1/commands/{id} with "scheduled" and its run_at, a cancel deletes it, and the
-- horizon (days) costs nothing. A dispatcher in every worker process takes due rows with
-- FOR UPDATE SKIP LOCKED, publishes them with confirms and deletes them in the same
-- transaction: an outbox. A crash between the confirm and the commit publishes the row again
-- later under the same command id, and the inbox absorbs it. docs/job-control.md says why
-- neither TTL queues nor a broker plugin hold these.
CREATE TABLE scheduled_commands (
    id           uuid PRIMARY KEY,
    tenant       text NOT NULL,
    type         text NOT NULL,
    run_at       timestamptz NOT NULL,
    -- The encoded envelope, published as it is.
    body         bytea NOT NULL,
    traceparent  text NOT NULL,
    batch_id     uuid,
    batch_index  integer,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX scheduled_commands_due ON scheduled_commands (run_at);
CREATE INDEX scheduled_commands_batch ON scheduled_commands (batch_id) WHERE batch_id IS NOT NULL;

-- A cancelled command keeps a row whose status is "cancelled": the worker's inbox insert meets
-- it and applies nothing. A cancel of a command no worker has seen yet writes that row first
-- (with an empty type until the command arrives). Rows are keyed by tenant and id, so a
-- tenant that guesses another's id (ids derived from idempotency keys or schedule ticks can be
-- computed) writes a tombstone of its own that no command of the other tenant ever meets.
ALTER TABLE commands DROP CONSTRAINT commands_pkey;
ALTER TABLE commands ADD PRIMARY KEY (tenant, id);
CREATE INDEX commands_id ON commands (id);
ALTER TABLE commands DROP CONSTRAINT commands_status_check;
ALTER TABLE commands ADD CONSTRAINT commands_status_check
    CHECK (status IN ('processing', 'succeeded', 'rejected', 'retrying', 'dead', 'cancelled'));

-- A cancelled batch: workers read it under FOR SHARE in the transaction that would apply one of
-- its commands, so a cancel and a commit of the same batch are ordered.
ALTER TABLE batches ADD COLUMN cancelled_at timestamptz;
