-- sessions.error is read by patients and therapists: it gets a short sentence meant for people.
-- The daemon's technical reason (storage status codes, SQL errors, object names, the error type
-- of an internal failure) stays in emgd.jobs.last_error, which only the daemon and operators read.
--
-- Reasons about the file itself (emg_core's sentences: not a C3D file, no EMG channel, too large,
-- empty) are already written for people and pass through. The daemon's reasons about everything
-- else start with a fixed phrase (daemon/jobs.py, daemon/isolation.py), mapped here.

create function emgd.error_for_people(p_last_error text, p_state text) returns text
    language sql
    immutable
    set search_path = ''
as $$
    select case
        when p_last_error is null then null
        when p_state = 'quarantined' then
            'This recording could not be analysed: the analysis stopped twice, so it has been'
            ' set aside. The file may be damaged; an administrator can try it again.'
        when p_last_error like 'storage unavailable:%' then
            'This recording could not be downloaded from storage. An administrator can try it'
            ' again.'
        when p_last_error like 'database unavailable:%' then
            'The results of this recording could not be saved. An administrator can try it again.'
        when p_last_error like 'results rejected by the database:%' then
            'The analysis of this recording gave results that did not pass the checks, so none'
            ' were saved. An administrator has the details.'
        when p_last_error like 'internal error%'
            or p_last_error like 'the analysis stopped on an unexpected%' then
            'This recording could not be analysed because of an internal error. An administrator'
            ' has the details.'
        when p_last_error like 'object not found:%' then
            'The file of this recording is no longer in storage.'
        when p_last_error like '%not a regular file; refusing to read it%' then
            'The file of this recording could not be read from storage.'
        when p_last_error like '%is not under a known patient''s folder%' then
            'This recording is not in a patient''s folder, so it cannot be analysed.'
        when p_last_error like 'analysis took longer than%'
            or p_last_error like 'analysis worker%'
            or p_last_error like 'analysis exceeded the memory limit%' then
            'The analysis of this recording did not finish. The file may be damaged; an'
            ' administrator can try it again.'
        -- about the file: emg_core's own sentence, bounded
        else left(p_last_error, 300)
    end
$$;

-- jobs_sync as before, with the sentence for people on the session.
create or replace function emgd.jobs_sync() returns trigger
    language plpgsql
    security definer
    set search_path = ''
as $$
begin
    if tg_op = 'UPDATE' and new.state is not distinct from old.state
        and new.last_error is not distinct from old.last_error
        and new.object_version is not distinct from old.object_version then
        return null;
    end if;

    if tg_op = 'INSERT' or new.state is distinct from old.state
        or new.last_error is distinct from old.last_error then
        update public.sessions s set
            status = case new.state
                when 'pending' then 'pending'
                when 'running' then 'processing'
                when 'succeeded' then 'completed'
                else 'failed' end,
            stage = case new.state
                when 'pending' then 'queued'
                when 'running' then 'downloading'
                when 'succeeded' then 'done'
                else 'failed' end,
            progress = case new.state when 'succeeded' then 1 else 0 end,
            error = case when new.state in ('failed', 'quarantined')
                then emgd.error_for_people(new.last_error, new.state) end
        where s.id = new.session_id;
    end if;

    -- Wake daemons whenever there is (new) work: a job became pending, or a pending job now
    -- points at a newer object version.
    if new.state = 'pending' and (
        tg_op = 'INSERT' or old.state <> 'pending'
        or new.object_version is distinct from old.object_version) then
        perform pg_notify('emgd_jobs',
            json_build_object('job_id', new.id, 'session_id', new.session_id)::text);
    end if;
    return null;
end
$$;

revoke all on function emgd.error_for_people(text, text) from public, anon, authenticated;
grant execute on function emgd.error_for_people(text, text) to service_role;

-- Sessions that failed before this migration get their sentence now.
update public.sessions s
set error = emgd.error_for_people(j.last_error, j.state)
from emgd.jobs j
where j.session_id = s.id and j.state in ('failed', 'quarantined');
