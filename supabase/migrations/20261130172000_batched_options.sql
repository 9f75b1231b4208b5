-- emgd.analysis_options for many sessions in one round trip: the daemon reads each claimed job's
-- options right after its download, and jobs running at the same time share the statement (as
-- their stages, reuse checks and results do, see 20261130171000_batched_calls.sql). n is an
-- element's position in the array; each element is read on its own, its error its own.
create function emgd.analysis_options_many(p_session_ids uuid[])
returns table (n int, ok jsonb, err_code text, err_message text)
language plpgsql
security definer
set search_path = ''
as $$
declare
    i int;
begin
    for i in 1 .. coalesce(array_length(p_session_ids, 1), 0) loop
        n := i;
        err_code := null;
        err_message := null;
        begin
            ok := emgd.analysis_options(p_session_ids[i]);
        exception when others then
            ok := null;
            err_code := sqlstate;
            err_message := sqlerrm;
        end;
        return next;
    end loop;
end;
$$;

revoke all on function emgd.analysis_options_many(uuid[]) from public;
grant execute on function emgd.analysis_options_many(uuid[]) to service_role;
