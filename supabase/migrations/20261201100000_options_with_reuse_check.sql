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

-- Made of the two batched functions it replaces in the daemon: emgd.analysis_options_many reads
-- each element's options on its own (a failed read answers for its own job only), and
-- emgd.reuse_or_stage_many checks the elements that have them, with their per-element errors and
-- the durable commit of a batch that reused results.
create function emgd.options_reuse_or_stage_many(
    p_job_ids bigint[], p_tokens uuid[], p_sha256 text[], p_sizes bigint[],
    p_base_options jsonb, p_analysis_version text, p_stage text, p_progress real
)
returns table (n int, job_id bigint, verdict text, options jsonb, err_code text, err_message text)
language plpgsql
security definer
set search_path = ''
as $$
begin
    return query
    with elements as (
        -- each job's session, by the job (the caller names jobs, never sessions)
        select u.o::int as n, u.id, j.session_id
        from unnest(p_job_ids) with ordinality as u(id, o)
        left join emgd.jobs j on j.id = u.id
    ),
    read as materialized (
        select e.n, e.id, coalesce(p_base_options, '{}'::jsonb) || coalesce(a.ok, '{}'::jsonb)
                as options,
            a.err_code, a.err_message
        from emgd.analysis_options_many(array(select e.session_id from elements e order by e.n)) a
        join elements e on e.n = a.n
    ),
    readable as materialized (
        select r.n, r.id, r.options, row_number() over (order by r.n)::int as k
        from read r where r.err_code is null
    ),
    checked as materialized (
        select c.n as k, c.verdict, c.err_code, c.err_message
        from emgd.reuse_or_stage_many(
            array(select p_job_ids[r.n] from readable r order by r.k),
            array(select p_tokens[r.n] from readable r order by r.k),
            array(select p_sha256[r.n] from readable r order by r.k),
            array(select p_sizes[r.n] from readable r order by r.k),
            array(select r.options from readable r order by r.k),
            p_analysis_version, p_stage, p_progress) c
    )
    select r.n, r.id, c.verdict, case when c.err_code is null then r.options end,
        c.err_code, c.err_message
    from readable r join checked c on c.k = r.k
    union all
    select r.n, r.id, null::text, null::jsonb, r.err_code, r.err_message
    from read r where r.err_code is not null;
end;
$$;

revoke all on function emgd.options_reuse_or_stage_many(bigint[], uuid[], text[], bigint[], jsonb,
    text, text, real) from public;
grant execute on function emgd.options_reuse_or_stage_many(bigint[], uuid[], text[], bigint[],
    jsonb, text, text, real) to service_role;
