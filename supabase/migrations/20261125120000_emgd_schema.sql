-- emgd: users and assignments, one session per uploaded C3D object, its per-channel parameters
-- and contractions; updated_at and validation triggers on every table.
--
-- Column names of session_parameters and contractions are those of emg_core.results
-- (ChannelResult, Contraction): the JSON output and the rows share one contract.
-- Functions set search_path = '' and qualify every name (Supabase's linter and safer definers).

create schema if not exists emgd;
comment on schema emgd is 'emgd internals (job queue, configuration); not exposed through the API';
revoke all on schema emgd from public;

-- ---------------------------------------------------------------------------------------------
-- shared trigger functions
-- ---------------------------------------------------------------------------------------------

create function emgd.set_updated_at() returns trigger
    language plpgsql
    set search_path = ''
as $$
begin
    new.updated_at := now();
    return new;
end
$$;

-- Raised by every validation trigger: SQLSTATE 23514 (check_violation) lets the daemon treat a
-- rejected result as a permanent failure, and the message names table, column and value.
create function emgd.reject(tbl text, msg text) returns void
    language plpgsql
    set search_path = ''
as $$
begin
    raise exception '%: %', tbl, msg using errcode = 'check_violation';
end
$$;

-- A rate is a fraction: NULL is allowed only where the result field is optional; NaN and
-- infinities are rejected because they compare greater than 1 in PostgreSQL.
create function emgd.check_fraction(tbl text, col text, val double precision) returns void
    language plpgsql
    set search_path = ''
as $$
begin
    if val is not null and not (val >= 0 and val <= 1) then
        perform emgd.reject(tbl, format('%s must be between 0 and 1, got %s', col, val));
    end if;
end
$$;

create function emgd.check_nonnegative(tbl text, col text, val double precision) returns void
    language plpgsql
    set search_path = ''
as $$
begin
    if val is not null and not (val >= 0 and val < 'Infinity'::double precision) then
        perform emgd.reject(tbl, format('%s must be >= 0 and finite, got %s', col, val));
    end if;
end
$$;

create function emgd.check_finite(tbl text, col text, val double precision) returns void
    language plpgsql
    set search_path = ''
as $$
begin
    if val is not null
        and (val = 'NaN'::double precision or val in ('Infinity', '-Infinity')) then
        perform emgd.reject(tbl, format('%s must be a finite number, got %s', col, val));
    end if;
end
$$;

-- ---------------------------------------------------------------------------------------------
-- public.users, public.therapist_patients
-- ---------------------------------------------------------------------------------------------

create table public.users (
    id uuid primary key references auth.users (id) on delete cascade,
    role text not null default 'patient',
    display_name text,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
comment on table public.users is 'Application profile of an auth user: role patient|therapist|admin';

create table public.therapist_patients (
    therapist_id uuid not null references public.users (id) on delete cascade,
    patient_id uuid not null references public.users (id) on delete cascade,
    active boolean not null default true,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    primary key (therapist_id, patient_id)
);
create index therapist_patients_patient_idx on public.therapist_patients (patient_id);
comment on table public.therapist_patients is
    'Which therapist treats which patient; only active rows grant the therapist read access';

create function emgd.validate_user() returns trigger
    language plpgsql
    set search_path = ''
as $$
begin
    if new.role is null or new.role not in ('patient', 'therapist', 'admin') then
        perform emgd.reject('users', format(
            'role must be one of patient, therapist, admin; got %L', new.role));
    end if;
    return new;
end
$$;

create function emgd.validate_therapist_patient() returns trigger
    language plpgsql
    security definer
    set search_path = ''
as $$
declare
    therapist_role text;
    patient_role text;
begin
    if new.therapist_id = new.patient_id then
        perform emgd.reject('therapist_patients', 'a user cannot be their own therapist');
    end if;
    select u.role into therapist_role from public.users u where u.id = new.therapist_id;
    if therapist_role is distinct from 'therapist' then
        perform emgd.reject('therapist_patients', format(
            'therapist_id %s must be a user with role therapist, not %s',
            new.therapist_id, coalesce(therapist_role, 'a missing user')));
    end if;
    select u.role into patient_role from public.users u where u.id = new.patient_id;
    if patient_role is distinct from 'patient' then
        perform emgd.reject('therapist_patients', format(
            'patient_id %s must be a user with role patient, not %s',
            new.patient_id, coalesce(patient_role, 'a missing user')));
    end if;
    return new;
end
$$;

-- ---------------------------------------------------------------------------------------------
-- public.sessions: one per C3D storage object
-- ---------------------------------------------------------------------------------------------

create table public.sessions (
    id uuid primary key default gen_random_uuid(),
    bucket_id text not null,
    object_name text not null,
    object_id uuid,
    object_version text,
    patient_id uuid references public.users (id) on delete set null,
    content_sha256 text,
    file_size bigint,
    recorded_at timestamptz,
    game_name text,
    game_level int,
    game_duration double precision,
    game_therapist_id text,
    player_name text,
    game_score double precision,
    metadata jsonb,
    duration_s double precision,
    status text not null default 'pending',
    stage text not null default 'queued',
    progress real not null default 0,
    error text,
    analysis_version text,
    processing jsonb,
    overall_compliance double precision,
    symmetry double precision,
    processed_at timestamptz,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    unique (bucket_id, object_name)
);
create index sessions_patient_idx on public.sessions (patient_id);
comment on table public.sessions is
    'One uploaded C3D recording: where it is, whose it is, its game metadata, processing status '
    '(status pending|processing|completed|failed, stage and progress for live display) and '
    'session-level results';

create function emgd.validate_session() returns trigger
    language plpgsql
    set search_path = ''
as $$
begin
    if new.status not in ('pending', 'processing', 'completed', 'failed') then
        perform emgd.reject('sessions', format(
            'status must be one of pending, processing, completed, failed; got %L', new.status));
    end if;
    if new.stage not in ('queued', 'downloading', 'analysing', 'saving', 'done', 'failed')
    then
        perform emgd.reject('sessions', format(
            'stage must be one of queued, downloading, analysing, saving, done, failed; '
            'got %L', new.stage));
    end if;
    -- Sessions are updated several times per job (status, stages): the checks of columns those
    -- updates never touch run only when a value is there to check.
    if new.progress is not null and not (new.progress >= 0 and new.progress <= 1) then
        perform emgd.check_fraction('sessions', 'progress', new.progress);
    end if;
    if new.file_size is not null and new.file_size < 0 then
        perform emgd.reject('sessions', format('file_size must be >= 0, got %s', new.file_size));
    end if;
    if new.content_sha256 is not null and new.content_sha256 !~ '^[0-9a-f]{64}$' then
        perform emgd.reject('sessions', format(
            'content_sha256 must be 64 lowercase hex digits, got %L', new.content_sha256));
    end if;
    if new.duration_s is not null or new.game_duration is not null or new.game_score is not null
        or new.overall_compliance is not null or new.symmetry is not null then
        perform emgd.check_nonnegative('sessions', 'duration_s', new.duration_s);
        perform emgd.check_nonnegative('sessions', 'game_duration', new.game_duration);
        perform emgd.check_finite('sessions', 'game_score', new.game_score);
        perform emgd.check_fraction('sessions', 'overall_compliance', new.overall_compliance);
        perform emgd.check_fraction('sessions', 'symmetry', new.symmetry);
    end if;
    return new;
end
$$;

-- ---------------------------------------------------------------------------------------------
-- public.session_parameters: one row per session and EMG channel (emg_core ChannelResult)
-- ---------------------------------------------------------------------------------------------

create table public.session_parameters (
    id bigint generated always as identity primary key,
    session_id uuid not null references public.sessions (id) on delete cascade,
    name text not null,
    sampling_rate double precision not null,
    unit text not null,
    mvc_value double precision not null,
    mvc_threshold double precision not null,
    mvc_method text not null,
    duration_threshold_ms double precision not null,
    expected_contractions int not null,
    contractions_total int not null,
    contractions_good int not null,
    contractions_mvc_compliant int not null,
    contractions_duration_compliant int not null,
    completion_rate double precision not null,
    intensity_rate double precision not null,
    duration_rate double precision not null,
    compliance_rate double precision not null,
    time_under_tension_ms double precision not null,
    rms double precision not null,
    mav double precision not null,
    mpf_hz double precision,
    mdf_hz double precision,
    fi_nsm5 double precision,
    fi_nsm5_relative double precision,
    mpf_slope_hz_per_s double precision,
    mdf_slope_hz_per_s double precision,
    mpf_slope_pct_per_s double precision,
    mdf_slope_pct_per_s double precision,
    signal_quality double precision not null,
    activation_agreement double precision,
    processing jsonb,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    unique (session_id, name)
);
comment on table public.session_parameters is
    'Per session and EMG channel: the fields of emg_core.results.ChannelResult (name = C3D label)';

create function emgd.validate_session_parameters() returns trigger
    language plpgsql
    set search_path = ''
as $$
declare
    t constant text := 'session_parameters';
begin
    if new.sampling_rate is null or not (new.sampling_rate > 0
        and new.sampling_rate < 'Infinity'::double precision) then
        perform emgd.reject(t, format('sampling_rate must be > 0, got %s', new.sampling_rate));
    end if;
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
    return new;
end
$$;

-- ---------------------------------------------------------------------------------------------
-- public.contractions: one row per detected contraction (emg_core Contraction)
-- ---------------------------------------------------------------------------------------------

create table public.contractions (
    id bigint generated always as identity primary key,
    session_id uuid not null references public.sessions (id) on delete cascade,
    channel text not null,
    contraction_index int not null,
    start_ms double precision not null,
    end_ms double precision not null,
    duration_ms double precision not null,
    peak_amplitude double precision not null,
    mean_amplitude double precision not null,
    meets_mvc boolean not null,
    meets_duration boolean not null,
    is_good boolean not null,
    mpf_hz double precision,
    mdf_hz double precision,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    unique (session_id, channel, contraction_index)
);
comment on table public.contractions is
    'Detected contractions (emg_core Contraction; its field index is the column contraction_index)';

-- duration_ms must equal end_ms - start_ms; the tolerance (1 microsecond) only absorbs floating
-- point rounding, never a different definition of duration.
create function emgd.validate_contraction() returns trigger
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
    if not (abs(new.duration_ms - (new.end_ms - new.start_ms)) <= 1e-3) then
        perform emgd.reject(t, format(
            'duration_ms (%s) must equal end_ms - start_ms (%s)',
            new.duration_ms, new.end_ms - new.start_ms));
    end if;
    perform emgd.check_nonnegative(t, 'peak_amplitude', new.peak_amplitude);
    perform emgd.check_nonnegative(t, 'mean_amplitude', new.mean_amplitude);
    perform emgd.check_nonnegative(t, 'mpf_hz', new.mpf_hz);
    perform emgd.check_nonnegative(t, 'mdf_hz', new.mdf_hz);
    return new;
end
$$;

-- ---------------------------------------------------------------------------------------------
-- triggers
-- ---------------------------------------------------------------------------------------------

create trigger users_validate before insert or update on public.users
    for each row execute function emgd.validate_user();
create trigger therapist_patients_validate before insert or update on public.therapist_patients
    for each row execute function emgd.validate_therapist_patient();
create trigger sessions_validate before insert or update on public.sessions
    for each row execute function emgd.validate_session();
create trigger session_parameters_validate before insert or update on public.session_parameters
    for each row execute function emgd.validate_session_parameters();
create trigger contractions_validate before insert or update on public.contractions
    for each row execute function emgd.validate_contraction();

create trigger users_updated_at before update on public.users
    for each row execute function emgd.set_updated_at();
create trigger therapist_patients_updated_at before update on public.therapist_patients
    for each row execute function emgd.set_updated_at();
create trigger sessions_updated_at before update on public.sessions
    for each row execute function emgd.set_updated_at();
create trigger session_parameters_updated_at before update on public.session_parameters
    for each row execute function emgd.set_updated_at();
create trigger contractions_updated_at before update on public.contractions
    for each row execute function emgd.set_updated_at();

-- ---------------------------------------------------------------------------------------------
-- a profile for every new auth user
-- ---------------------------------------------------------------------------------------------

-- The role comes from raw_app_meta_data, which only the service role can set; raw_user_meta_data
-- is chosen by the user at sign-up and must never grant a role. Unknown roles become patient.
create function emgd.handle_new_user() returns trigger
    language plpgsql
    security definer
    set search_path = ''
as $$
declare
    wanted text := new.raw_app_meta_data ->> 'role';
begin
    insert into public.users (id, role, display_name)
    values (
        new.id,
        case when wanted in ('patient', 'therapist', 'admin') then wanted else 'patient' end,
        coalesce(new.raw_user_meta_data ->> 'display_name', new.raw_user_meta_data ->> 'full_name',
                 new.email)
    )
    on conflict (id) do nothing;
    return new;
end
$$;

create trigger emgd_on_auth_user_created after insert on auth.users
    for each row execute function emgd.handle_new_user();
