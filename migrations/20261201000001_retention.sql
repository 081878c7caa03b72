-- Retention prunes by age: webhook deliveries and finished batches need an index by time.
CREATE INDEX webhook_deliveries_received ON webhook_deliveries (received_at);
CREATE INDEX batches_finished ON batches (finished_at) WHERE finished_at IS NOT NULL;
