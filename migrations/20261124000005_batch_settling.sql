-- Workers settle batches a moment after their commits, and sweep the unfinished ones now and
-- then, a page at a time (a process can die between a batch's last commit and its settling):
-- the sweep pages through them by this index.
CREATE INDEX batches_unfinished ON batches (created_at, id) WHERE finished_at IS NULL;

-- Nothing lists a tenant's commands by time (GET /v1/commands/{id} reads by key, the
-- operators' search uses commands_updated), and every command paid for this index.
DROP INDEX commands_tenant_updated;
