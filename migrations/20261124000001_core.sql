-- API keys: only a SHA-256 of the key is stored; key_id is the public part used to find the row.
CREATE TABLE api_keys (
    key_id      text PRIMARY KEY,
    tenant      text NOT NULL,
    key_hash    bytea NOT NULL,
    scopes      text[] NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

-- One row per command a worker has seen: the inbox (the primary key makes a second effect
-- impossible) and the status a producer reads back. Ingest writes nothing here, so a command
-- that is queued but not yet taken by a worker has no row and reads as "pending".
CREATE TABLE commands (
    id            uuid PRIMARY KEY,
    tenant        text NOT NULL,
    type          text NOT NULL,
    status        text NOT NULL CHECK (status IN ('processing', 'succeeded', 'rejected', 'retrying', 'dead')),
    attempts      integer NOT NULL,
    last_error    text,
    result        jsonb,
    submitted_at  timestamptz NOT NULL,
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    completed_at  timestamptz
);
CREATE INDEX commands_tenant_updated ON commands (tenant, updated_at DESC);

CREATE TABLE accounts (
    tenant         text NOT NULL,
    id             text NOT NULL,
    balance_cents  bigint NOT NULL CHECK (balance_cents >= 0),
    opened_by      uuid NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, id)
);

-- Double entry: every transfer writes a debit and a credit that sum to zero.
CREATE TABLE ledger_entries (
    id            bigserial PRIMARY KEY,
    tenant        text NOT NULL,
    command_id    uuid NOT NULL,
    account_id    text NOT NULL,
    amount_cents  bigint NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (tenant, account_id) REFERENCES accounts (tenant, id)
);
CREATE INDEX ledger_entries_account ON ledger_entries (tenant, account_id, id);
CREATE INDEX ledger_entries_command ON ledger_entries (command_id);

CREATE TABLE events (
    id           uuid PRIMARY KEY,
    tenant       text NOT NULL,
    name         text NOT NULL,
    data         jsonb NOT NULL,
    occurred_at  timestamptz NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_by_name_time ON events (tenant, name, occurred_at, id);
CREATE INDEX events_by_time ON events (tenant, occurred_at, id);

-- Parked poison messages. id deduplicates a redelivered dead-letter message.
CREATE TABLE dead_letters (
    id            uuid PRIMARY KEY,
    command_id    uuid,
    tenant        text,
    command_type  text,
    body          bytea NOT NULL,
    headers       jsonb NOT NULL,
    error_kind    text NOT NULL,
    error         text NOT NULL,
    attempts      integer NOT NULL,
    dead_at       timestamptz NOT NULL DEFAULT now(),
    state         text NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'replayed', 'discarded'))
);
CREATE INDEX dead_letters_open ON dead_letters (dead_at DESC) WHERE state = 'open';
CREATE INDEX dead_letters_command ON dead_letters (command_id);
