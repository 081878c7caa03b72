-- Inbound webhooks: the sources admins configure and every delivery that arrived.

CREATE TABLE webhook_sources (
    name             text PRIMARY KEY,
    tenant           text NOT NULL,
    scheme           text NOT NULL CHECK (scheme IN ('standard', 'github', 'stripe', 'hmac')),
    -- Kept as given: verifying an HMAC needs the secret itself. Several during rotation.
    secrets          text[] NOT NULL CHECK (cardinality(secrets) >= 1),
    tolerance_secs   integer NOT NULL,
    command_type     text NOT NULL,
    -- For the plain HMAC scheme: the header holding the signature, and the one holding the
    -- sender's delivery id (without it, the body's SHA-256 identifies a delivery).
    signature_header text,
    id_header        text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- Verified deliveries keep their raw body and headers; refused ones keep only why and when.
CREATE TABLE webhook_deliveries (
    id          uuid PRIMARY KEY,
    source      text NOT NULL,
    delivery_id text,
    verified    boolean NOT NULL,
    error       text,
    headers     jsonb NOT NULL,
    body        bytea,
    command_id  uuid,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_deliveries_source ON webhook_deliveries (source, received_at DESC, id);
