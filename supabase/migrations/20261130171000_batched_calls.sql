-- The per-job calls, for many jobs in one round trip and one commit (group commit).
--
-- A daemon with many jobs in flight sends their stage updates, reuse checks and results in
-- batches: one statement and one transaction (one WAL flush for every result in it) instead of
-- one per job. Each element runs the very function a single call runs, in a block of its own
-- (a subtransaction): its lease check, its writes and its errors are its own. A result a trigger
-- refuses, or a lease that was lost, costs that element only; its error's SQLSTATE and message
-- come back in its row, and the daemon classifies it as it classifies any database error.
-- Elements are applied in job id order so two batches never lock rows in opposite orders; n is
-- an element's position in the arrays.

-- Stages (analysing, saving): progress only, committed without waiting for the WAL flush, as
-- emgd.set_stage does. ok is false when the lease is not ours.
create function emgd.set_stages(
    p_job_ids bigint[], p_tokens uuid[], p_stages text[], p_progress real[]
)
returns table (n int, job_id bigint, ok boolean, err_code text, err_message text)
language plpgsql
security definer
set search_path = ''
as $$
declare
    i int;
begin
    perform set_config('synchronous_commit', 'off', true);
    for i in select o from unnest(p_job_ids) with ordinality as u(id, o) order by u.id loop
        n := i;
        job_id := p_job_ids[i];
        err_code := null;
        err_message := null;
        begin
            ok := emgd.set_stage(p_job_ids[i], p_tokens[i], p_stages[i], p_progress[i]);
        exception when others then
            ok := null;
            err_code := sqlstate;
            err_message := sqlerrm;
        end;
        return next;
    end loop;
end;
$$;

-- emgd.reuse_or_stage for many jobs: verdict 'reused', 'staged' or 'lease_lost' per element.
-- A reused element completes its job, so the commit waits for the WAL flush whenever one did.
create function emgd.reuse_or_stage_many(
    p_job_ids bigint[], p_tokens uuid[], p_sha256 text[], p_sizes bigint[],
    p_processing jsonb[], p_analysis_version text, p_stage text, p_progress real
)
returns table (n int, job_id bigint, verdict text, err_code text, err_message text)
language plpgsql
security definer
set search_path = ''
as $$
declare
    i int;
    completed boolean := false;
begin
    for i in select o from unnest(p_job_ids) with ordinality as u(id, o) order by u.id loop
        n := i;
        job_id := p_job_ids[i];
        err_code := null;
        err_message := null;
        begin
            verdict := emgd.reuse_or_stage(p_job_ids[i], p_tokens[i], p_sha256[i], p_sizes[i],
                p_analysis_version, p_processing[i], p_stage, p_progress);
            completed := completed or verdict = 'reused';
        exception when others then
            verdict := null;
            err_code := sqlstate;
            err_message := sqlerrm;
        end;
        return next;
    end loop;
    -- Elements that only recorded a stage turned the flush off for the whole transaction; a
    -- completed job's results must be durable when the daemon hears of them.
    if completed then
        perform set_config('synchronous_commit',
            (select s.reset_val from pg_catalog.pg_settings s where s.name = 'synchronous_commit'),
            true);
    end if;
end;
$$;

-- emgd.complete_job for many jobs, one durable commit for all of them.
create function emgd.complete_jobs(
    p_job_ids bigint[], p_tokens uuid[], p_results jsonb[], p_sha256 text[], p_sizes bigint[]
)
returns table (n int, job_id bigint, ok boolean, err_code text, err_message text)
language plpgsql
security definer
set search_path = ''
as $$
declare
    i int;
begin
    for i in select o from unnest(p_job_ids) with ordinality as u(id, o) order by u.id loop
        n := i;
        job_id := p_job_ids[i];
        err_code := null;
        err_message := null;
        begin
            ok := emgd.complete_job(p_job_ids[i], p_tokens[i], p_results[i], p_sha256[i],
                p_sizes[i]);
        exception when others then
            ok := null;
            err_code := sqlstate;
            err_message := sqlerrm;
        end;
        return next;
    end loop;
end;
$$;

revoke all on function emgd.set_stages(bigint[], uuid[], text[], real[]) from public;
revoke all on function emgd.reuse_or_stage_many(bigint[], uuid[], text[], bigint[], jsonb[], text,
    text, real) from public;
revoke all on function emgd.complete_jobs(bigint[], uuid[], jsonb[], text[], bigint[]) from public;
grant execute on function emgd.set_stages(bigint[], uuid[], text[], real[]) to service_role;
grant execute on function emgd.reuse_or_stage_many(bigint[], uuid[], text[], bigint[], jsonb[],
    text, text, real) to service_role;
grant execute on function emgd.complete_jobs(bigint[], uuid[], jsonb[], text[], bigint[])
    to service_role;
