-- The patient's options are read in the statement that checks for reusable results.
--
-- The daemon read a job's options (emgd.analysis_options_many) in a statement of its own while
-- the file downloaded, then sent them back with the reuse check (emgd.reuse_or_stage_many): two
-- statements, two round trips and two commits per job for what is one step, since the reuse
-- check needs the options anyway (reuse keys on exactly the options the analysis would use).
-- emgd.options_reuse_or_stage_many reads them where they are needed, merged over the daemon's
-- own (p_base_options; the patient's override them, key by key), and answers them with the
-- verdict, so the analysis runs with what the reuse check compared.
--
-- The options are still read after the claim has committed, so a settings change is either seen
-- here or takes the running job back (emgd.requeue_patient): a job never commits results
-- analysed with options older than its claim.

create function emgd.options_reuse_or_stage_many(
    p_job_ids bigint[], p_tokens uuid[], p_sha256 text[], p_sizes bigint[],
    p_base_options jsonb, p_analysis_version text, p_stage text, p_progress real
)
returns table (n int, job_id bigint, verdict text, options jsonb, err_code text, err_message text)
language plpgsql
security definer
set search_path = ''
as $$
declare
    i int;
    sessions uuid[];
    completed boolean := false;
begin
    -- each job's session, by the job (the caller names jobs, never sessions)
    select array_agg(j.session_id order by u.o) into sessions
    from unnest(p_job_ids) with ordinality as u(id, o)
    left join emgd.jobs j on j.id = u.id;

    for i in select o from unnest(p_job_ids) with ordinality as u(id, o) order by u.id loop
        n := i;
        job_id := p_job_ids[i];
        err_code := null;
        err_message := null;
        begin
            options := coalesce(p_base_options, '{}'::jsonb)
                || coalesce(emgd.analysis_options(sessions[i]), '{}'::jsonb);
            verdict := emgd.reuse_or_stage(p_job_ids[i], p_tokens[i], p_sha256[i], p_sizes[i],
                p_analysis_version, options, p_stage, p_progress);
            completed := completed or verdict = 'reused';
        exception when others then
            verdict := null;
            options := null;
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

revoke all on function emgd.options_reuse_or_stage_many(bigint[], uuid[], text[], bigint[], jsonb,
    text, text, real) from public;
grant execute on function emgd.options_reuse_or_stage_many(bigint[], uuid[], text[], bigint[],
    jsonb, text, text, real) to service_role;
