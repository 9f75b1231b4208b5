-- Channel quality: a channel the analysis cannot trust (too noisy, mostly artefact) is stored as
-- unusable, with no counts and with warnings saying why, instead of with counts nobody should
-- believe. Alongside: the artefact masked out, the mains hum found (and removed), the detection
-- levels, where the MVC came from, why fatigue fields are missing, and per-contraction spectral
-- slopes. Column names are emg_core.results' field names (ChannelResult, Contraction).
--
-- Stored sessions keep their old rows (usable, no warnings, nothing masked) until they are
-- analysed again: emgd.reprocess_all() requeues every finished job, and because the new
-- ANALYSIS_VERSION differs from the stored one, emgd.reuse_results() finds nothing to reuse and
-- each file is analysed afresh.
--
-- New columns on existing tables inherit the table grants and RLS policies (there are no
-- column-level grants).

-- ---------------------------------------------------------------------------------------------
-- public.session_parameters
-- ---------------------------------------------------------------------------------------------

alter table public.session_parameters
    add column usable boolean not null default true,
    add column warnings text[] not null default '{}',
    add column masked_samples int not null default 0,
    add column masked_s double precision not null default 0,
    add column mains_hz double precision,
    add column mains_fraction double precision not null default 0,
    add column mains_removed boolean not null default false,
    add column rest_level double precision,
    add column onset_level double precision,
    add column offset_level double precision,
    add column mvc_source text,
    add column mvc_start_ms double precision,
    add column mvc_end_ms double precision,
    add column fatigue_reason text;

-- An unusable channel gives no counts; the validation trigger still demands them of a usable one.
alter table public.session_parameters
    alter column mvc_value drop not null,
    alter column mvc_threshold drop not null,
    alter column contractions_total drop not null,
    alter column contractions_good drop not null,
    alter column contractions_mvc_compliant drop not null,
    alter column contractions_duration_compliant drop not null,
    alter column completion_rate drop not null,
    alter column intensity_rate drop not null,
    alter column duration_rate drop not null,
    alter column compliance_rate drop not null,
    alter column time_under_tension_ms drop not null;

comment on column public.session_parameters.usable is
    'false: the channel cannot be trusted; its counts, rates, time under tension and MVC are NULL '
    'and warnings says why';
comment on column public.session_parameters.warnings is
    'Short sentences for a therapist about this channel (at least one when usable is false)';
comment on column public.session_parameters.masked_samples is
    'Samples excluded as artefact (stuck, railed, dropout, steps); masked_s is the same in seconds';
comment on column public.session_parameters.mains_hz is
    'The mains line found in the signal (e.g. 49.5 Hz), NULL when none; mains_fraction is its '
    'share of the in-band power before removal, mains_removed whether it was notched out';
comment on column public.session_parameters.onset_level is
    'Envelope level (in unit) that starts a contraction; offset_level ends one, rest_level is the '
    'envelope at rest';
comment on column public.session_parameters.mvc_source is
    'Where the MVC came from, in words; mvc_start_ms/mvc_end_ms: the window of an estimated MVC';

alter table public.contractions
    add column mpf_slope_hz_per_s double precision,
    add column mdf_slope_hz_per_s double precision;

comment on column public.contractions.mpf_slope_hz_per_s is
    'Within-contraction trend of the mean power frequency (NULL when too short for several '
    'spectral windows); mdf_slope_hz_per_s likewise for the median frequency';

-- ---------------------------------------------------------------------------------------------
-- validation
-- ---------------------------------------------------------------------------------------------

create or replace function emgd.validate_session_parameters() returns trigger
    language plpgsql
    set search_path = ''
as $$
declare
    t constant text := 'session_parameters';
    missing text[];
begin
    if new.sampling_rate is null or not (new.sampling_rate > 0
        and new.sampling_rate < 'Infinity'::double precision) then
        perform emgd.reject(t, format('sampling_rate must be > 0, got %s', new.sampling_rate));
    end if;

    -- A usable channel has every count; an unusable one says why it has none.
    if new.usable then
        missing := array_remove(array[
            case when new.mvc_value is null then 'mvc_value' end,
            case when new.mvc_threshold is null then 'mvc_threshold' end,
            case when new.contractions_total is null then 'contractions_total' end,
            case when new.contractions_good is null then 'contractions_good' end,
            case when new.contractions_mvc_compliant is null then 'contractions_mvc_compliant' end,
            case when new.contractions_duration_compliant is null
                then 'contractions_duration_compliant' end,
            case when new.completion_rate is null then 'completion_rate' end,
            case when new.intensity_rate is null then 'intensity_rate' end,
            case when new.duration_rate is null then 'duration_rate' end,
            case when new.compliance_rate is null then 'compliance_rate' end,
            case when new.time_under_tension_ms is null then 'time_under_tension_ms' end
        ], null);
        if cardinality(missing) > 0 then
            perform emgd.reject(t, format(
                'a usable channel must have %s (only an unusable channel may leave them NULL)',
                array_to_string(missing, ', ')));
        end if;
    elsif new.usable = false and coalesce(cardinality(new.warnings), 0) = 0 then
        perform emgd.reject(t, 'an unusable channel must have at least one warning saying why');
    end if;
    if new.warnings is not null
        and exists (select 1 from unnest(new.warnings) w where coalesce(btrim(w), '') = '') then
        perform emgd.reject(t, format('warnings must not be empty or NULL, got %s', new.warnings));
    end if;

    -- NULL counts (an unusable channel) pass these checks: each only judges a value it is given.
    perform emgd.check_nonnegative(t, 'mvc_value', new.mvc_value);
    perform emgd.check_nonnegative(t, 'mvc_threshold', new.mvc_threshold);
    perform emgd.check_nonnegative(t, 'duration_threshold_ms', new.duration_threshold_ms);
    perform emgd.check_nonnegative(t, 'expected_contractions', new.expected_contractions);
    perform emgd.check_nonnegative(t, 'contractions_total', new.contractions_total);
    perform emgd.check_nonnegative(t, 'contractions_good', new.contractions_good);
    perform emgd.check_nonnegative(t, 'contractions_mvc_compliant', new.contractions_mvc_compliant);
    perform emgd.check_nonnegative(t, 'contractions_duration_compliant',
        new.contractions_duration_compliant);
    if new.contractions_good > new.contractions_total
        or new.contractions_mvc_compliant > new.contractions_total
        or new.contractions_duration_compliant > new.contractions_total then
        perform emgd.reject(t, format(
            'good (%s), mvc-compliant (%s) and duration-compliant (%s) contractions cannot '
            'exceed contractions_total (%s)', new.contractions_good,
            new.contractions_mvc_compliant, new.contractions_duration_compliant,
            new.contractions_total));
    end if;
    perform emgd.check_fraction(t, 'completion_rate', new.completion_rate);
    perform emgd.check_fraction(t, 'intensity_rate', new.intensity_rate);
    perform emgd.check_fraction(t, 'duration_rate', new.duration_rate);
    perform emgd.check_fraction(t, 'compliance_rate', new.compliance_rate);
    perform emgd.check_fraction(t, 'signal_quality', new.signal_quality);
    perform emgd.check_fraction(t, 'activation_agreement', new.activation_agreement);
    perform emgd.check_nonnegative(t, 'time_under_tension_ms', new.time_under_tension_ms);
    perform emgd.check_nonnegative(t, 'rms', new.rms);
    perform emgd.check_nonnegative(t, 'mav', new.mav);
    perform emgd.check_nonnegative(t, 'mpf_hz', new.mpf_hz);
    perform emgd.check_nonnegative(t, 'mdf_hz', new.mdf_hz);
    perform emgd.check_finite(t, 'fi_nsm5', new.fi_nsm5);
    perform emgd.check_finite(t, 'fi_nsm5_relative', new.fi_nsm5_relative);
    perform emgd.check_finite(t, 'mpf_slope_hz_per_s', new.mpf_slope_hz_per_s);
    perform emgd.check_finite(t, 'mdf_slope_hz_per_s', new.mdf_slope_hz_per_s);
    perform emgd.check_finite(t, 'mpf_slope_pct_per_s', new.mpf_slope_pct_per_s);
    perform emgd.check_finite(t, 'mdf_slope_pct_per_s', new.mdf_slope_pct_per_s);

    -- artefact, mains and detection levels
    perform emgd.check_nonnegative(t, 'masked_samples', new.masked_samples);
    perform emgd.check_nonnegative(t, 'masked_s', new.masked_s);
    if new.mains_hz is not null
        and not (new.mains_hz > 0 and new.mains_hz < 'Infinity'::double precision) then
        perform emgd.reject(t, format('mains_hz must be > 0 and finite, got %s', new.mains_hz));
    end if;
    perform emgd.check_fraction(t, 'mains_fraction', new.mains_fraction);
    perform emgd.check_nonnegative(t, 'rest_level', new.rest_level);
    perform emgd.check_nonnegative(t, 'onset_level', new.onset_level);
    perform emgd.check_nonnegative(t, 'offset_level', new.offset_level);
    -- A contraction starts above where it ends, and ends at or above rest (hysteresis); each
    -- pair is judged when both are given.
    if new.onset_level < new.offset_level or new.offset_level < new.rest_level
        or new.onset_level < new.rest_level then
        perform emgd.reject(t, format(
            'levels must satisfy onset_level (%s) >= offset_level (%s) >= rest_level (%s)',
            new.onset_level, new.offset_level, new.rest_level));
    end if;
    perform emgd.check_nonnegative(t, 'mvc_start_ms', new.mvc_start_ms);
    perform emgd.check_nonnegative(t, 'mvc_end_ms', new.mvc_end_ms);
    if not (new.mvc_end_ms > new.mvc_start_ms) then
        perform emgd.reject(t, format('mvc_end_ms (%s) must be greater than mvc_start_ms (%s)',
            new.mvc_end_ms, new.mvc_start_ms));
    end if;
    return new;
end
$$;

create or replace function emgd.validate_contraction() returns trigger
    language plpgsql
    set search_path = ''
as $$
declare
    t constant text := 'contractions';
begin
    if new.contraction_index < 0 then
        perform emgd.reject(t, format('contraction_index must be >= 0, got %s',
            new.contraction_index));
    end if;
    perform emgd.check_nonnegative(t, 'start_ms', new.start_ms);
    perform emgd.check_finite(t, 'end_ms', new.end_ms);
    if not (new.end_ms > new.start_ms) then
        perform emgd.reject(t, format('end_ms (%s) must be greater than start_ms (%s)',
            new.end_ms, new.start_ms));
    end if;
    -- duration_ms must equal end_ms - start_ms; the tolerance (1 microsecond) only absorbs
    -- floating point rounding, never a different definition of duration.
    if not (abs(new.duration_ms - (new.end_ms - new.start_ms)) <= 1e-3) then
        perform emgd.reject(t, format(
            'duration_ms (%s) must equal end_ms - start_ms (%s)',
            new.duration_ms, new.end_ms - new.start_ms));
    end if;
    perform emgd.check_nonnegative(t, 'peak_amplitude', new.peak_amplitude);
    perform emgd.check_nonnegative(t, 'mean_amplitude', new.mean_amplitude);
    perform emgd.check_nonnegative(t, 'mpf_hz', new.mpf_hz);
    perform emgd.check_nonnegative(t, 'mdf_hz', new.mdf_hz);
    perform emgd.check_finite(t, 'mpf_slope_hz_per_s', new.mpf_slope_hz_per_s);
    perform emgd.check_finite(t, 'mdf_slope_hz_per_s', new.mdf_slope_hz_per_s);
    return new;
end
$$;

-- ---------------------------------------------------------------------------------------------
-- emgd.complete_job: the new fields in, as SessionResult.to_dict() names them
-- ---------------------------------------------------------------------------------------------

-- As in 20261125190000_job_functions.sql, plus the new columns. jsonb_populate_recordset turns the
-- JSON list of warnings into text[] itself; a field the result does not have at all (a daemon of
-- the previous version committing during an upgrade) becomes NULL there, so the NOT NULL columns
-- fall back to their defaults, which describe such a result truthfully (usable, nothing masked).
-- emgd.session_result needs no change: to_jsonb of a row carries every column, the new ones
-- included, and a text[] comes back as a JSON list.
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

    update emgd.jobs
    set state = 'succeeded', last_error = null, finished_at = now(),
        lease_owner = null, lease_token = null, lease_expires_at = null
    where id = j.id;
    return true;
end;
$$;

-- CREATE OR REPLACE keeps a function's privileges; stated again so this file reads on its own.
revoke all on function emgd.complete_job(bigint, uuid, jsonb, text, bigint)
    from public, anon, authenticated;
grant execute on function emgd.complete_job(bigint, uuid, jsonb, text, bigint) to service_role;
