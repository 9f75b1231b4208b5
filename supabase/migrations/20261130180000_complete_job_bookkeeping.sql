-- emgd.complete_job without its own copy of the lease and finished_at bookkeeping: the jobs_guard
-- trigger stamps finished_at and clears the lease on every transition into a final state, as the
-- other job functions already leave to it. The body is otherwise the one of
-- 20261130120000_channel_quality.sql.

create or replace function emgd.complete_job(
    p_job_id bigint, p_token uuid, p_result jsonb, p_sha256 text, p_size bigint
)
returns boolean
language plpgsql
security definer
set search_path = ''
as $$
declare
    j emgd.jobs;
    meta jsonb := coalesce(p_result -> 'metadata', '{}'::jsonb);
begin
    j := emgd.lock_leased_job(p_job_id, p_token);
    if j.id is null then
        return false;
    end if;

    delete from public.contractions where session_id = j.session_id;
    delete from public.session_parameters where session_id = j.session_id;

    update public.sessions s
    set content_sha256 = p_sha256,
        file_size = p_size,
        recorded_at = (p_result ->> 'recorded_at')::timestamptz,
        duration_s = (p_result ->> 'duration_s')::double precision,
        game_name = meta ->> 'game_name',
        game_level = (meta ->> 'game_level')::int,
        game_duration = (meta ->> 'game_duration')::double precision,
        game_therapist_id = meta ->> 'therapist_id',
        player_name = meta ->> 'player_name',
        game_score = (meta ->> 'game_score')::double precision,
        metadata = meta,
        analysis_version = p_result ->> 'analysis_version',
        processing = p_result -> 'processing',
        overall_compliance = (p_result ->> 'overall_compliance')::double precision,
        symmetry = (p_result ->> 'symmetry')::double precision,
        progress = 1,
        processed_at = now()
    where s.id = j.session_id;

    insert into public.session_parameters (
        session_id, name, sampling_rate, unit, mvc_value, mvc_threshold, mvc_method,
        duration_threshold_ms, expected_contractions, contractions_total, contractions_good,
        contractions_mvc_compliant, contractions_duration_compliant, completion_rate, intensity_rate,
        duration_rate, compliance_rate, time_under_tension_ms, rms, mav, mpf_hz, mdf_hz, fi_nsm5,
        fi_nsm5_relative, mpf_slope_hz_per_s, mdf_slope_hz_per_s, mpf_slope_pct_per_s,
        mdf_slope_pct_per_s, signal_quality, activation_agreement, processing,
        usable, warnings, masked_samples, masked_s, mains_hz, mains_fraction, mains_removed,
        rest_level, onset_level, offset_level, mvc_source, mvc_start_ms, mvc_end_ms, fatigue_reason
    )
    select j.session_id, c.name, c.sampling_rate, c.unit, c.mvc_value, c.mvc_threshold, c.mvc_method,
        c.duration_threshold_ms, c.expected_contractions, c.contractions_total, c.contractions_good,
        c.contractions_mvc_compliant, c.contractions_duration_compliant, c.completion_rate,
        c.intensity_rate, c.duration_rate, c.compliance_rate, c.time_under_tension_ms, c.rms, c.mav,
        c.mpf_hz, c.mdf_hz, c.fi_nsm5, c.fi_nsm5_relative, c.mpf_slope_hz_per_s, c.mdf_slope_hz_per_s,
        c.mpf_slope_pct_per_s, c.mdf_slope_pct_per_s, c.signal_quality, c.activation_agreement,
        p_result -> 'processing',
        coalesce(c.usable, true), coalesce(c.warnings, '{}'), coalesce(c.masked_samples, 0),
        coalesce(c.masked_s, 0), c.mains_hz, coalesce(c.mains_fraction, 0),
        coalesce(c.mains_removed, false), c.rest_level, c.onset_level, c.offset_level,
        c.mvc_source, c.mvc_start_ms, c.mvc_end_ms, c.fatigue_reason
    from jsonb_populate_recordset(null::public.session_parameters, p_result -> 'channels') c;

    insert into public.contractions (
        session_id, channel, contraction_index, start_ms, end_ms, duration_ms, peak_amplitude,
        mean_amplitude, meets_mvc, meets_duration, is_good, mpf_hz, mdf_hz,
        mpf_slope_hz_per_s, mdf_slope_hz_per_s
    )
    select j.session_id, ch ->> 'name', (k ->> 'index')::int, (k ->> 'start_ms')::double precision,
        (k ->> 'end_ms')::double precision, (k ->> 'duration_ms')::double precision,
        (k ->> 'peak_amplitude')::double precision, (k ->> 'mean_amplitude')::double precision,
        (k ->> 'meets_mvc')::boolean, (k ->> 'meets_duration')::boolean, (k ->> 'is_good')::boolean,
        (k ->> 'mpf_hz')::double precision, (k ->> 'mdf_hz')::double precision,
        (k ->> 'mpf_slope_hz_per_s')::double precision, (k ->> 'mdf_slope_hz_per_s')::double precision
    from jsonb_array_elements(p_result -> 'channels') ch
    cross join lateral jsonb_array_elements(coalesce(ch -> 'contractions', '[]'::jsonb)) k;

    -- finished_at and the lease are emgd.jobs_guard's to set on the way to succeeded
    update emgd.jobs set state = 'succeeded', last_error = null where id = j.id;
    return true;
end;
$$;

-- CREATE OR REPLACE keeps a function's privileges; stated again so this file reads on its own.
revoke all on function emgd.complete_job(bigint, uuid, jsonb, text, bigint)
    from public, anon, authenticated;
grant execute on function emgd.complete_job(bigint, uuid, jsonb, text, bigint) to service_role;
