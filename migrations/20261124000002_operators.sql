-- Operators: dead-letter triage and replay, audit, dashboard sessions, process heartbeats,
-- queue pauses and per-10-second outcome counts for the dashboard's charts.

-- Every failed attempt of a command, oldest first: {"attempt", "error", "at"}.
ALTER TABLE commands ADD COLUMN errors jsonb NOT NULL DEFAULT '[]';
-- "Recent commands" views, without full scans. Every index here is paid by every command a
-- worker records, so there are two: by time (filters on a common type or on `succeeded` find
-- their page among the newest rows), and a partial one for the rare statuses an operator looks
-- for. (An index by type and one by status would each add an insertion to every command.)
CREATE INDEX commands_updated ON commands (updated_at DESC, id);
CREATE INDEX commands_unusual_updated ON commands (status, updated_at DESC, id)
    WHERE status IN ('rejected', 'retrying', 'dead', 'processing');
-- Throughput over the last minutes is read from `outcome_counts`, not from here.

-- The grouping key: command type + error kind + the error with ids and numbers masked.
ALTER TABLE dead_letters ADD COLUMN fingerprint text NOT NULL DEFAULT '';
ALTER TABLE dead_letters ADD COLUMN replay_count integer NOT NULL DEFAULT 0;
ALTER TABLE dead_letters ADD COLUMN replayed_at timestamptz;
ALTER TABLE dead_letters ADD COLUMN discarded_at timestamptz;
-- The payload of the last replay when an operator edited it (the original body is kept).
ALTER TABLE dead_letters ADD COLUMN replayed_payload jsonb;
DROP INDEX dead_letters_open;
CREATE INDEX dead_letters_state_time ON dead_letters (state, dead_at DESC, id);
CREATE INDEX dead_letters_state_type_time ON dead_letters (state, command_type, dead_at DESC, id);
CREATE INDEX dead_letters_state_group_time ON dead_letters (state, fingerprint, dead_at DESC, id);
CREATE INDEX dead_letters_state_tenant_time ON dead_letters (state, tenant, dead_at DESC, id);
-- "Error contains …" searches: trigrams, so a rare substring is found without reading every
-- dead letter (pg_trgm is a trusted extension: a database owner may create it).
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX dead_letters_error_trgm ON dead_letters USING gin (error gin_trgm_ops);

-- One row per fingerprint, kept by triggers so that listing groups never scans dead letters.
CREATE TABLE dead_letter_groups (
    fingerprint  text PRIMARY KEY,
    command_type text,
    error_kind   text NOT NULL,
    message      text NOT NULL,
    open_count   bigint NOT NULL DEFAULT 0,
    total_count  bigint NOT NULL DEFAULT 0,
    first_seen   timestamptz NOT NULL,
    last_seen    timestamptz NOT NULL
);
CREATE INDEX dead_letter_groups_open ON dead_letter_groups (last_seen DESC) WHERE open_count > 0;

CREATE FUNCTION dead_letter_groups_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO dead_letter_groups AS g
               (fingerprint, command_type, error_kind, message, open_count, total_count, first_seen, last_seen)
        VALUES (NEW.fingerprint, NEW.command_type, NEW.error_kind, left(NEW.error, 500),
                CASE WHEN NEW.state = 'open' THEN 1 ELSE 0 END, 1, NEW.dead_at, NEW.dead_at)
        ON CONFLICT (fingerprint) DO UPDATE
           SET open_count = g.open_count + EXCLUDED.open_count,
               total_count = g.total_count + 1,
               first_seen = least(g.first_seen, EXCLUDED.first_seen),
               last_seen = greatest(g.last_seen, EXCLUDED.last_seen),
               message = EXCLUDED.message;
    ELSIF OLD.state IS DISTINCT FROM NEW.state THEN
        UPDATE dead_letter_groups
           SET open_count = open_count
                 + CASE WHEN NEW.state = 'open' THEN 1 ELSE 0 END
                 - CASE WHEN OLD.state = 'open' THEN 1 ELSE 0 END
         WHERE fingerprint = NEW.fingerprint;
    END IF;
    RETURN NULL;
END $$;
-- Dead letters recorded before fingerprints existed: grouped by type and error kind.
UPDATE dead_letters SET fingerprint = 'legacy-' || md5(coalesce(command_type, '?') || '/' || error_kind)
 WHERE fingerprint = '';
INSERT INTO dead_letter_groups (fingerprint, command_type, error_kind, message, open_count, total_count, first_seen, last_seen)
SELECT fingerprint, min(command_type), min(error_kind), left(min(error), 500),
       count(*) FILTER (WHERE state = 'open'), count(*), min(dead_at), max(dead_at)
  FROM dead_letters GROUP BY fingerprint;

CREATE TRIGGER dead_letter_groups_count AFTER INSERT OR UPDATE OF state ON dead_letters
    FOR EACH ROW EXECUTE FUNCTION dead_letter_groups_count();

-- Who did what to what, and when: every replay, discard, edit, pause and resume.
CREATE TABLE audit_log (
    id      bigserial PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT now(),
    actor   text NOT NULL,
    action  text NOT NULL,
    target  text NOT NULL,
    details jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_at ON audit_log (at DESC, id DESC);

-- Dashboard logins: only the SHA-256 of the session token is stored.
CREATE TABLE dashboard_sessions (
    token_hash bytea PRIMARY KEY,
    -- The API key that signed in: the session ends when the key is revoked or loses admin.
    key_id     text NOT NULL,
    actor      text NOT NULL,
    csrf_token text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX dashboard_sessions_expiry ON dashboard_sessions (expires_at);

-- Heartbeats of every running sluice process.
CREATE TABLE processes (
    id           uuid PRIMARY KEY,
    roles        text NOT NULL,
    host         text NOT NULL,
    pid          integer NOT NULL,
    concurrency  integer NOT NULL,
    prefetch     integer NOT NULL,
    in_flight    integer NOT NULL DEFAULT 0,
    processed    bigint NOT NULL DEFAULT 0,
    accepted     bigint NOT NULL DEFAULT 0,
    -- How long the latest delivered message had waited since it was accepted.
    queue_wait_ms bigint,
    consuming    boolean NOT NULL DEFAULT false,
    started_at   timestamptz NOT NULL DEFAULT now(),
    last_seen    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX processes_last_seen ON processes (last_seen DESC);

-- Paused queues; workers read this with their heartbeat and stop consuming.
CREATE TABLE queue_controls (
    queue      text PRIMARY KEY,
    paused     boolean NOT NULL,
    changed_by text NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now()
);

-- Outcomes per 10-second bucket, process and command type, written by each worker process
-- every few seconds (its own rows, so workers never contend), read by the dashboard's charts.
-- latency_buckets counts end-to-end latencies at or under 5, 10, 25, 50, 100, 250, 500, 1000,
-- 2500, 5000, 10000 ms and above (12 slots).
CREATE TABLE outcome_counts (
    bucket          timestamptz NOT NULL,
    process         uuid NOT NULL,
    type            text NOT NULL,
    succeeded       bigint NOT NULL DEFAULT 0,
    rejected        bigint NOT NULL DEFAULT 0,
    retried         bigint NOT NULL DEFAULT 0,
    dead            bigint NOT NULL DEFAULT 0,
    latency_buckets bigint[] NOT NULL CHECK (cardinality(latency_buckets) = 12),
    PRIMARY KEY (bucket, process, type)
);
