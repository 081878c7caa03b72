-- Runs with search_path = shop, public (see sluice's store/app_migrations.rs), so these tables
-- are shop.products and shop.orders, and this history is shop._sqlx_migrations.
CREATE TABLE products (
    tenant      text   NOT NULL,
    sku         text   NOT NULL,
    price_cents bigint NOT NULL CHECK (price_cents >= 0),
    stock       integer NOT NULL CHECK (stock >= 0),
    PRIMARY KEY (tenant, sku)
);

CREATE TABLE orders (
    tenant      text        NOT NULL,
    order_id    text        NOT NULL,
    sku         text        NOT NULL,
    quantity    integer     NOT NULL CHECK (quantity > 0),
    total_cents bigint      NOT NULL,
    -- The sluice command that placed it: one order per command, whatever was redelivered.
    command_id  uuid        NOT NULL UNIQUE,
    placed_at   timestamptz NOT NULL,
    PRIMARY KEY (tenant, order_id),
    FOREIGN KEY (tenant, sku) REFERENCES products (tenant, sku)
);
