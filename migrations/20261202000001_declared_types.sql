-- Declared command types with a Postgres function as handler (commands.dir, [sql]). sluice
-- builds no SQL text: the function's schema and name are validated identifiers, quoted here by
-- format's %I, and the values travel as parameters.
CREATE FUNCTION sluice_call_declared(fn_schema text, fn_name text, payload jsonb, command_id uuid, tenant text)
RETURNS jsonb
LANGUAGE plpgsql
AS $$
DECLARE
    result jsonb;
BEGIN
    EXECUTE format('SELECT %I.%I($1, $2, $3)', fn_schema, fn_name) INTO result USING payload, command_id, tenant;
    RETURN result;
END
$$;

-- What each worker process's circuits (per declared HTTP type) are doing, for the dashboard:
-- {"order.place": "open", ...}; a type absent is closed.
ALTER TABLE processes ADD COLUMN circuits jsonb NOT NULL DEFAULT '{}';
