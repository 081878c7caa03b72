-- Recurring schedules: a cron pattern in a time zone that submits one command per tick. Every
-- worker process looks for due schedules with FOR UPDATE SKIP LOCKED, publishes the tick's
-- command (its id derived from the schedule and the tick, so a second firing of the same tick
-- collapses in the inbox) and moves next_fire_at on in the same transaction.
CREATE TABLE schedules (
    tenant        text NOT NULL,
    name          text NOT NULL,
    cron          text NOT NULL,
    timezone      text NOT NULL,
    command_type  text NOT NULL,
    payload       jsonb NOT NULL,
    priority      text NOT NULL DEFAULT 'normal' CHECK (priority IN ('high', 'normal', 'low')),
    catch_up      text NOT NULL CHECK (catch_up IN ('skip', 'once')),
    paused        boolean NOT NULL DEFAULT false,
    -- The next tick to fire; null once the pattern has no future tick.
    next_fire_at  timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, name)
);
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE NOT paused;

-- The ticks each schedule fired (the latest few are kept): the dashboard's last outcomes join
-- the commands they submitted. The key makes a tick's record once.
CREATE TABLE schedule_fires (
    tenant      text NOT NULL,
    name        text NOT NULL,
    tick        timestamptz NOT NULL,
    command_id  uuid NOT NULL,
    fired_at    timestamptz NOT NULL DEFAULT now(),
    -- skip: later ticks missed while nothing ran were dropped; once: this tick stands for them.
    missed      integer NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, name, tick),
    FOREIGN KEY (tenant, name) REFERENCES schedules (tenant, name) ON DELETE CASCADE
);
