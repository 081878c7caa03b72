-- Per-key ordering. Commands with an ordering_key travel in one of the ordered partition
-- queues (single active consumer), so a key's commands reach one worker in the order they were
-- accepted and are applied one at a time. When one cannot be applied now (a transient failure,
-- or a dead letter under the type's "halt" policy) its key is blocked: a row here, and the
-- key's later commands are taken off the queue into ordering_held in arrival order, so the
-- partition's other keys keep flowing. A dispatcher in every worker process releases a key
-- whose block is due (not halted, not_before passed) by publishing its held commands back to
-- the partition, head first; a worker applies a released command only while it is still the
-- head of its key's line. docs/job-control.md has the whole protocol.
CREATE TABLE ordering_blocks (
    tenant        text NOT NULL,
    ordering_key  text NOT NULL,
    -- The command that blocked the key (failing, or dead under "halt").
    command_id    uuid NOT NULL,
    command_type  text NOT NULL,
    -- True while an operator must replay or discard dead_letter_id, command_id's dead letter.
    halted        boolean NOT NULL,
    dead_letter_id uuid,
    error         text NOT NULL,
    not_before    timestamptz NOT NULL DEFAULT now(),
    since         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, ordering_key)
);
CREATE INDEX ordering_blocks_due ON ordering_blocks (not_before) WHERE NOT halted;

CREATE SEQUENCE ordering_held_seq;
-- Places at the head of a line (a retried or replayed command) count down from -1, so a new
-- head is before everything and no place is ever given twice: a stale copy of a command that
-- once stood at some place can never pass for the one standing there now.
CREATE SEQUENCE ordering_head_seq INCREMENT BY -1 MAXVALUE -1 START WITH -1;

CREATE TABLE ordering_held (
    tenant        text NOT NULL,
    ordering_key  text NOT NULL,
    -- The place in the key's line: a retried or replayed head goes before everything held.
    seq           bigint NOT NULL,
    command_id    uuid NOT NULL,
    -- The encoded envelope, published as it is on release.
    body          bytea NOT NULL,
    attempt       integer NOT NULL,
    traceparent   text,
    -- Published in the current release round (reset when the head fails again).
    published     boolean NOT NULL DEFAULT false,
    held_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, ordering_key, seq),
    UNIQUE (tenant, ordering_key, command_id)
);

-- Each event is stamped when its row is written, not when its transaction began: the commands
-- of several keys applied in one transaction, in order, then keep their order in the log.
ALTER TABLE events ALTER COLUMN recorded_at SET DEFAULT clock_timestamp();
