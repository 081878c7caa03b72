-- Batches of commands submitted together, their progress and their completion callbacks.

CREATE TABLE batches (
    id              uuid PRIMARY KEY,
    tenant          text NOT NULL,
    -- Commands accepted into the batch (published and confirmed).
    total           integer NOT NULL,
    rejected_at_ingest integer NOT NULL DEFAULT 0,
    callback_url    text,
    callback_secret text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);
CREATE INDEX batches_tenant_created ON batches (tenant, created_at DESC);

-- Progress is counted from the commands rows (no counter row that every worker would update).
ALTER TABLE commands ADD COLUMN batch_id uuid;
ALTER TABLE commands ADD COLUMN batch_index integer;
CREATE INDEX commands_batch ON commands (batch_id, status) WHERE batch_id IS NOT NULL;

-- Completion callbacks waiting to be delivered (an outbox; one row per finished batch).
CREATE TABLE batch_callbacks (
    batch_id        uuid PRIMARY KEY REFERENCES batches (id),
    url             text NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    last_error      text
);
CREATE INDEX batch_callbacks_due ON batch_callbacks (next_attempt_at) WHERE delivered_at IS NULL;
-- The dashboard's recent batches, across tenants.
CREATE INDEX batches_created ON batches (created_at DESC);
