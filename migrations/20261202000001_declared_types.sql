-- Declared command types with a Postgres function as handler (commands.dir, [sql]). sluice
-- builds no SQL text: the function's schema and name are validated identifiers, quoted here by
-- format's %I, and the values travel as parameters.
--
-- One call applies a worker batch's commands of a type in order, each in a subtransaction
-- (the BEGIN ... EXCEPTION block): RAISE EXCEPTION (raise_exception, P0001) undoes only that
-- command's writes and comes back as {"refused": message, "hint": hint}; a result comes back
-- as {"result": value}. Any other error aborts the call, and the worker runs the batch's
-- commands one per transaction. One round trip per batch instead of a savepoint, a call and a
-- release per command.
CREATE FUNCTION sluice_call_declared(
    fn_schema text, fn_name text, payloads jsonb[], command_ids uuid[], tenants text[]
) RETURNS jsonb[]
LANGUAGE plpgsql
AS $$
DECLARE
    call text := format('SELECT %I.%I($1, $2, $3)', fn_schema, fn_name);
    outcomes jsonb[] := '{}';
    result jsonb;
    message text;
    hint text;
BEGIN
    FOR i IN 1 .. coalesce(array_length(command_ids, 1), 0) LOOP
        BEGIN
            EXECUTE call INTO result USING payloads[i], command_ids[i], tenants[i];
            outcomes := array_append(outcomes, jsonb_build_object('result', result));
        EXCEPTION WHEN raise_exception THEN
            GET STACKED DIAGNOSTICS message = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT;
            outcomes := array_append(outcomes, jsonb_build_object('refused', message, 'hint', hint));
        END;
    END LOOP;
    RETURN outcomes;
END
$$;

-- What each worker process's circuits (per declared HTTP type) are doing, for the dashboard:
-- {"order.place": "open", ...}; a type absent is closed.
ALTER TABLE processes ADD COLUMN circuits jsonb NOT NULL DEFAULT '{}';
