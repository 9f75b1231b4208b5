-- The therapist's side: per-patient clinical settings that reach the analysis, the MVC reference
-- session, the therapist's inputs for a session (RPE, blood-flow restriction), the scoring
-- configuration, and the report picture's path on the session.
--
-- Who may do what (RLS below): an actively assigned therapist and an admin write a patient's
-- settings and session inputs; the patient reads their own; nobody else sees them. The global
-- default settings row and the global scoring configuration are written by admins only.
--
-- Settings reach results through the queue: a change requeues exactly that patient's sessions
-- (emgd.requeue_jobs, which notifies), and the daemon asks emgd.analysis_options() which options
-- each job is analysed with. Those options are stored in sessions.processing -> 'options', the
-- key emgd.reuse_results matches on, so identical bytes with other options are analysed again.

-- ---------------------------------------------------------------------------------------------
-- public.patient_emg_settings
-- ---------------------------------------------------------------------------------------------

create table public.patient_emg_settings (
    id bigint generated always as identity primary key,
    patient_id uuid references public.users (id) on delete cascade,
    channel text,
    mvc_value double precision,
    mvc_unit text,
    mvc_percentage double precision not null default 75,
    duration_threshold_ms double precision not null default 2000,
    expected_contractions int not null default 12,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    unique nulls not distinct (patient_id, channel)
);
create index patient_emg_settings_patient_idx on public.patient_emg_settings (patient_id);
comment on table public.patient_emg_settings is
    'Clinical targets per patient and channel (the C3D label): MVC value and unit, intensity '
    'target (% MVC), duration threshold, expected contractions. patient_id NULL is the global '
    'default row (admins); channel NULL applies to every channel of that patient. The most '
    'specific row wins: patient+channel, patient, global+channel, global.';
comment on column public.patient_emg_settings.mvc_value is
    'The patient''s MVC for this channel in mvc_unit (V, mV or uV); NULL: use the reference '
    'session, else the session''s own estimate';

insert into public.patient_emg_settings (patient_id, channel) values (null, null);

-- The validation triggers are SECURITY DEFINER: the app's roles write these tables but have no
-- use of schema emgd, where emgd.reject lives, and a refusal must read as check_violation.
create function emgd.validate_patient_emg_settings() returns trigger
    language plpgsql
    security definer
    set search_path = ''
as $$
declare
    t constant text := 'patient_emg_settings';
begin
    if new.channel is not null and btrim(new.channel) = '' then
        perform emgd.reject(t, 'channel must be a C3D channel label or NULL (every channel)');
    end if;
    if new.mvc_value is not null and not (new.mvc_value > 0
        and new.mvc_value < 'Infinity'::double precision) then
        perform emgd.reject(t, format('mvc_value must be > 0 and finite, got %s', new.mvc_value));
    end if;
    if new.mvc_value is not null and new.patient_id is null then
        perform emgd.reject(t, 'an MVC belongs to a patient: the global default row has none');
    end if;
    if new.mvc_value is not null and coalesce(new.mvc_unit, '') not in ('V', 'mV', 'uV') then
        perform emgd.reject(t, format(
            'mvc_unit must be V, mV or uV when mvc_value is given, got %L', new.mvc_unit));
    end if;
    if new.mvc_unit is not null and new.mvc_unit not in ('V', 'mV', 'uV') then
        perform emgd.reject(t, format('mvc_unit must be V, mV or uV, got %L', new.mvc_unit));
    end if;
    if not (new.mvc_percentage > 0 and new.mvc_percentage <= 200) then
        perform emgd.reject(t, format(
            'mvc_percentage must be in (0, 200], got %s', new.mvc_percentage));
    end if;
    if not (new.duration_threshold_ms >= 0 and new.duration_threshold_ms <= 60000) then
        perform emgd.reject(t, format(
            'duration_threshold_ms must be between 0 and 60000, got %s',
            new.duration_threshold_ms));
    end if;
    if not (new.expected_contractions between 1 and 1000) then
        perform emgd.reject(t, format(
            'expected_contractions must be between 1 and 1000, got %s',
            new.expected_contractions));
    end if;
    if tg_op = 'UPDATE' and new.patient_id is distinct from old.patient_id then
        perform emgd.reject(t, 'settings cannot move to another patient; delete and insert');
    end if;
    return new;
end
$$;

create trigger patient_emg_settings_validate before insert or update on public.patient_emg_settings
    for each row execute function emgd.validate_patient_emg_settings();
create trigger patient_emg_settings_updated_at before update on public.patient_emg_settings
    for each row execute function emgd.set_updated_at();

-- ---------------------------------------------------------------------------------------------
-- sessions: the MVC reference flag and the report picture
-- ---------------------------------------------------------------------------------------------

alter table public.sessions
    add column mvc_reference boolean not null default false,
    add column report_path text;
create unique index sessions_one_mvc_reference_idx on public.sessions (patient_id)
    where mvc_reference;
comment on column public.sessions.mvc_reference is
    'This session''s MVC is the patient''s reference (set by public.set_mvc_reference)';
comment on column public.sessions.report_path is
    'Object name of the report picture (PNG) in the recording''s bucket; NULL until rendered';

-- ---------------------------------------------------------------------------------------------
-- requeue a patient's sessions (settings or reference changed)
-- ---------------------------------------------------------------------------------------------

-- Finished jobs go back to pending (emgd.requeue_jobs, which notifies the daemons). A job running
-- with the old options is taken back too (running -> pending drops its lease, as a new object
-- version does), so its commit is refused and it runs again with the new ones. A pending job has
-- not read its options yet. p_patient_id NULL (the global row) requeues every session.
create function emgd.requeue_patient(p_patient_id uuid, p_except uuid default null)
    returns int
    language plpgsql
    security definer
    set search_path = ''
as $$
declare
    ids bigint[];
    n int;
begin
    select coalesce(array_agg(j.id), '{}') into ids
    from emgd.jobs j join public.sessions s on s.id = j.session_id
    where (p_patient_id is null or s.patient_id = p_patient_id)
      and s.id is distinct from p_except;
    update emgd.jobs set state = 'pending', attempts = 0, crashes = 0, run_after = now(),
        last_error = null
    where id = any (ids) and state = 'running';
    get diagnostics n = row_count;
    return n + emgd.requeue_jobs(ids);
end
$$;

create function emgd.on_patient_emg_settings() returns trigger
    language plpgsql
    security definer
    set search_path = ''
as $$
begin
    if tg_op = 'DELETE' then
        perform emgd.requeue_patient(old.patient_id);
        return old;
    end if;
    if tg_op = 'UPDATE' and (new.channel, new.mvc_value, new.mvc_unit, new.mvc_percentage,
        new.duration_threshold_ms, new.expected_contractions) is not distinct from
        (old.channel, old.mvc_value, old.mvc_unit, old.mvc_percentage,
        old.duration_threshold_ms, old.expected_contractions) then
        return new;
    end if;
    perform emgd.requeue_patient(new.patient_id);
    return new;
end
$$;

create trigger patient_emg_settings_requeue
    after insert or update or delete on public.patient_emg_settings
    for each row execute function emgd.on_patient_emg_settings();

-- ---------------------------------------------------------------------------------------------
-- the options a session is analysed with (the daemon calls this per job)
-- ---------------------------------------------------------------------------------------------

-- emg_core AnalysisOptions fields as JSON: session-wide targets from the patient's (or the
-- global) channel-less row, and per channel label the targets of a more specific row plus the
-- MVC: the patient's settings first, else the reference session's (never for the reference
-- session itself, whose MVC is its own estimate). An MVC written in the C3D file outranks both;
-- emg_core reads it from the file.
create function emgd.analysis_options(p_session_id uuid) returns jsonb
    language plpgsql
    stable
    security definer
    set search_path = ''
as $$
declare
    s public.sessions;
    base public.patient_emg_settings;
    channels jsonb := '{}'::jsonb;
    r record;
begin
    select * into s from public.sessions where id = p_session_id;
    if s.id is null then
        return null;
    end if;
    select * into base from public.patient_emg_settings p
    where p.channel is null and (p.patient_id = s.patient_id or p.patient_id is null)
    order by p.patient_id nulls last limit 1;

    for r in
        with labels as (
            select p.channel as name from public.patient_emg_settings p
            where p.channel is not null and (p.patient_id = s.patient_id or p.patient_id is null)
            union
            select sp.name from public.sessions ref
            join public.session_parameters sp on sp.session_id = ref.id
            where ref.patient_id = s.patient_id and ref.mvc_reference and ref.id <> s.id
              and sp.usable and sp.mvc_value > 0
        )
        select l.name,
            spec.mvc_percentage, spec.duration_threshold_ms, spec.expected_contractions,
            own.mvc_value as own_mvc, own.mvc_unit as own_unit,
            ref.mvc_value as ref_mvc, ref.unit as ref_unit
        from labels l
        left join lateral (
            select p.* from public.patient_emg_settings p
            where p.channel = l.name and (p.patient_id = s.patient_id or p.patient_id is null)
            order by p.patient_id nulls last limit 1) spec on true
        left join lateral (
            select p.mvc_value, p.mvc_unit from public.patient_emg_settings p
            where p.patient_id = s.patient_id and p.mvc_value is not null
              and (p.channel = l.name or p.channel is null)
            order by p.channel nulls last limit 1) own on true
        left join lateral (
            select sp.mvc_value, sp.unit from public.sessions rs
            join public.session_parameters sp on sp.session_id = rs.id and sp.name = l.name
            where rs.patient_id = s.patient_id and rs.mvc_reference and rs.id <> s.id
              and sp.usable and sp.mvc_value > 0) ref on true
        order by l.name
    loop
        channels := channels || jsonb_build_object(r.name, jsonb_strip_nulls(jsonb_build_object(
            'mvc_percentage', r.mvc_percentage,
            'duration_threshold_ms', r.duration_threshold_ms,
            'expected_contractions', r.expected_contractions,
            'mvc_value', coalesce(r.own_mvc, r.ref_mvc),
            'mvc_unit', case when r.own_mvc is not null then r.own_unit else r.ref_unit end,
            'mvc_method', case when r.own_mvc is not null then 'patient_settings'
                               when r.ref_mvc is not null then 'reference_session' end)));
    end loop;

    -- a patient-wide MVC (channel NULL) applies to every channel not named above: "*"
    if base.patient_id is not null and base.mvc_value is not null then
        channels := channels || jsonb_build_object('*', jsonb_build_object(
            'mvc_value', base.mvc_value, 'mvc_unit', base.mvc_unit,
            'mvc_method', 'patient_settings'));
    end if;
    return jsonb_build_object(
        'mvc_percentage', coalesce(base.mvc_percentage, 75),
        'duration_threshold_ms', coalesce(base.duration_threshold_ms, 2000),
        'expected_contractions', coalesce(base.expected_contractions, 12),
        'channels', channels);
end
$$;

-- ---------------------------------------------------------------------------------------------
-- public.set_mvc_reference: the therapist marks a session as the patient's MVC reference
-- ---------------------------------------------------------------------------------------------

-- Callable over RPC by the patient's active therapist or an admin. The session must be completed
-- with at least one usable channel that has an MVC. The patient's other sessions are requeued so
-- their intensity is judged against the reference. Returns how many were requeued.
-- The RPC itself runs with the caller's rights (no definer function is an RPC); the work, which
-- must touch the queue, is done by a definer helper outside the API that checks the caller first.
create function emgd_private.mark_mvc_reference(p_session_id uuid) returns int
    language plpgsql
    security definer
    set search_path = ''
as $$
declare
    s public.sessions;
begin
    select * into s from public.sessions where id = p_session_id;
    if s.id is null
        or not (emgd_private.is_admin() or emgd_private.is_therapist_of(s.patient_id)) then
        -- the same answer for a session that does not exist and one the caller may not see
        raise exception 'set_mvc_reference: no session % that you treat', p_session_id
            using errcode = 'insufficient_privilege';
    end if;
    if s.patient_id is null then
        perform emgd.reject('sessions', 'a session without a patient cannot be a reference');
    end if;
    if s.status <> 'completed' or not exists (
        select 1 from public.session_parameters sp
        where sp.session_id = s.id and sp.usable and sp.mvc_value > 0) then
        perform emgd.reject('sessions', format(
            'session %s has no analysed channel with an MVC (status %s)', s.id, s.status));
    end if;
    update public.sessions set mvc_reference = false
    where patient_id = s.patient_id and mvc_reference and id <> s.id;
    update public.sessions set mvc_reference = true where id = s.id and not mvc_reference;
    return emgd.requeue_patient(s.patient_id, s.id);
end
$$;
revoke all on function emgd_private.mark_mvc_reference(uuid) from public, anon;
grant execute on function emgd_private.mark_mvc_reference(uuid) to authenticated, service_role;

create function public.set_mvc_reference(p_session_id uuid) returns int
    language sql
    security invoker
    set search_path = ''
as $$
    select emgd_private.mark_mvc_reference(p_session_id)
$$;
comment on function public.set_mvc_reference(uuid) is
    'Mark a completed session as its patient''s MVC reference (the patient''s active therapist '
    'or an admin); requeues the patient''s other sessions and returns how many';
revoke all on function public.set_mvc_reference(uuid) from public, anon;
grant execute on function public.set_mvc_reference(uuid) to authenticated, service_role;

-- ---------------------------------------------------------------------------------------------
-- public.session_inputs: what the therapist enters for a session
-- ---------------------------------------------------------------------------------------------

create table public.session_inputs (
    session_id uuid primary key references public.sessions (id) on delete cascade,
    rpe int,
    bfr_pressure_mmhg double precision,
    bfr_safe boolean,
    game_points_max double precision,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
comment on table public.session_inputs is
    'Per session, entered by the therapist: RPE after the session (Borg CR-10, 0-10), the '
    'blood-flow-restriction cuff pressure and whether it was within the safe range (false sets '
    'the performance score to 0), and the game''s maximum points (for the game score). '
    'Entering them changes the scores, never the signal analysis.';

create function emgd.validate_session_inputs() returns trigger
    language plpgsql
    security definer
    set search_path = ''
as $$
declare
    t constant text := 'session_inputs';
begin
    if new.rpe is not null and not (new.rpe between 0 and 10) then
        perform emgd.reject(t, format('rpe must be between 0 and 10 (Borg CR-10), got %s',
            new.rpe));
    end if;
    if new.bfr_pressure_mmhg is not null and not (new.bfr_pressure_mmhg >= 0
        and new.bfr_pressure_mmhg <= 400) then
        perform emgd.reject(t, format('bfr_pressure_mmhg must be between 0 and 400, got %s',
            new.bfr_pressure_mmhg));
    end if;
    if new.game_points_max is not null and not (new.game_points_max > 0
        and new.game_points_max < 'Infinity'::double precision) then
        perform emgd.reject(t, format('game_points_max must be > 0, got %s',
            new.game_points_max));
    end if;
    return new;
end
$$;

create trigger session_inputs_validate before insert or update on public.session_inputs
    for each row execute function emgd.validate_session_inputs();
create trigger session_inputs_updated_at before update on public.session_inputs
    for each row execute function emgd.set_updated_at();

-- ---------------------------------------------------------------------------------------------
-- public.scoring_configuration
-- ---------------------------------------------------------------------------------------------

create table public.scoring_configuration (
    id bigint generated always as identity primary key,
    patient_id uuid unique nulls not distinct references public.users (id) on delete cascade,
    weight_compliance double precision not null default 0.50,
    weight_symmetry double precision not null default 0.25,
    weight_effort double precision not null default 0.25,
    weight_game double precision not null default 0.00,
    weight_completion double precision not null default 1.0 / 3,
    weight_intensity double precision not null default 1.0 / 3,
    weight_duration double precision not null default 1.0 / 3,
    sessions_per_week int not null default 5,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
comment on table public.scoring_configuration is
    'Weights of the GHOSTLY+ performance score: compliance, symmetry, effort, game (sum 1), and '
    'of compliance''s completion, intensity and duration rates (sum 1); sessions_per_week for '
    'adherence. patient_id NULL is the global row (admins); a patient''s own row overrides it.';

insert into public.scoring_configuration (patient_id) values (null);

create function emgd.validate_scoring_configuration() returns trigger
    language plpgsql
    security definer
    set search_path = ''
as $$
declare
    t constant text := 'scoring_configuration';
begin
    if least(new.weight_compliance, new.weight_symmetry, new.weight_effort, new.weight_game,
             new.weight_completion, new.weight_intensity, new.weight_duration) < 0
        or greatest(new.weight_compliance, new.weight_symmetry, new.weight_effort,
                    new.weight_game, new.weight_completion, new.weight_intensity,
                    new.weight_duration) > 1 then
        perform emgd.reject(t, 'every weight must be between 0 and 1');
    end if;
    if abs(new.weight_compliance + new.weight_symmetry + new.weight_effort + new.weight_game - 1)
        > 1e-6 then
        perform emgd.reject(t, format(
            'weight_compliance + weight_symmetry + weight_effort + weight_game must be 1, got %s',
            new.weight_compliance + new.weight_symmetry + new.weight_effort + new.weight_game));
    end if;
    if abs(new.weight_completion + new.weight_intensity + new.weight_duration - 1) > 1e-6 then
        perform emgd.reject(t, format(
            'weight_completion + weight_intensity + weight_duration must be 1, got %s',
            new.weight_completion + new.weight_intensity + new.weight_duration));
    end if;
    if not (new.sessions_per_week between 1 and 21) then
        perform emgd.reject(t, format('sessions_per_week must be between 1 and 21, got %s',
            new.sessions_per_week));
    end if;
    return new;
end
$$;

create trigger scoring_configuration_validate before insert or update
    on public.scoring_configuration
    for each row execute function emgd.validate_scoring_configuration();
create trigger scoring_configuration_updated_at before update on public.scoring_configuration
    for each row execute function emgd.set_updated_at();

-- ---------------------------------------------------------------------------------------------
-- formulas (GHOSTLY+ clinical metrics), each a small immutable function the views share
-- ---------------------------------------------------------------------------------------------

-- One leg's (channel's) compliance: w_c * completion + w_i * intensity + w_d * duration, with
-- completion = min(total / expected, 1), intensity = mvc-compliant / total, duration =
-- duration-compliant / total (0 without contractions).
create function public.channel_compliance(
    total int, mvc_ok int, duration_ok int, expected int,
    w_completion double precision, w_intensity double precision, w_duration double precision)
    returns double precision
    language sql
    immutable
    set search_path = ''
as $$
    select case when total is null then null else
        w_completion * least(total::double precision / nullif(expected, 0), 1)
        + w_intensity * coalesce(mvc_ok::double precision / nullif(total, 0), 0)
        + w_duration * coalesce(duration_ok::double precision / nullif(total, 0), 0) end
$$;

-- Borg CR-10 to effort score: 4-6 is the target for older adults (1.0); 3 and 7 acceptable
-- (0.8); 2 and 8 outside (0.6); 0-1 and 9-10 need adjusting (0.2).
create function public.rpe_effort(rpe int) returns double precision
    language sql
    immutable
    set search_path = ''
as $$
    select case when rpe between 4 and 6 then 1.0
                when rpe in (3, 7) then 0.8
                when rpe in (2, 8) then 0.6
                when rpe between 0 and 10 then 0.2 end
$$;

-- Balance of two legs' compliance: 1 - |L - R| / (L + R); 0 when both are 0.
create function public.symmetry_score(l double precision, r double precision)
    returns double precision
    language sql
    immutable
    set search_path = ''
as $$
    select case when l is null or r is null then null
                when l + r = 0 then 0
                else 1 - abs(l - r) / (l + r) end
$$;

grant execute on function public.channel_compliance(int, int, int, int, double precision,
    double precision, double precision), public.rpe_effort(int),
    public.symmetry_score(double precision, double precision) to authenticated, service_role;

-- ---------------------------------------------------------------------------------------------
-- views (security_invoker: the reader's RLS applies to every table underneath)
-- ---------------------------------------------------------------------------------------------

-- Per session: compliance (mean of the usable channels' compliance), symmetry (two usable
-- channels: the legs), effort from RPE, game (points / max points, at most 1), the BFR gate
-- (0 when the therapist marked the pressure unsafe) and
--   performance = (w_c C + w_s S + w_e E + w_g G) x gate,
-- NULL while a component with a non-zero weight is missing (e.g. no RPE entered yet).
-- All scores are fractions (0..1).
create view public.session_scores with (security_invoker = true) as
with cfg as (
    select s.id as session_id, c.*
    from public.sessions s
    cross join lateral (
        select c.* from public.scoring_configuration c
        where c.patient_id = s.patient_id or c.patient_id is null
        order by c.patient_id nulls last limit 1) c
),
legs as (
    select p.session_id,
        count(*) as channels,
        avg(public.channel_compliance(p.contractions_total, p.contractions_mvc_compliant,
            p.contractions_duration_compliant, p.expected_contractions, cfg.weight_completion,
            cfg.weight_intensity, cfg.weight_duration)) as compliance,
        array_agg(public.channel_compliance(p.contractions_total, p.contractions_mvc_compliant,
            p.contractions_duration_compliant, p.expected_contractions, cfg.weight_completion,
            cfg.weight_intensity, cfg.weight_duration) order by p.name) as per_channel
    from public.session_parameters p
    join cfg on cfg.session_id = p.session_id
    where p.usable
    group by p.session_id
),
parts as (
    select s.id as session_id, s.patient_id, s.recorded_at, s.status,
        cfg.id as scoring_configuration_id,
        cfg.weight_compliance, cfg.weight_symmetry, cfg.weight_effort, cfg.weight_game,
        legs.channels,
        legs.compliance,
        case when legs.channels = 2
            then public.symmetry_score(legs.per_channel[1], legs.per_channel[2]) end as symmetry,
        public.rpe_effort(i.rpe) as effort,
        least(s.game_score / i.game_points_max, 1) as game,
        case when i.bfr_safe = false then 0 else 1 end as bfr_gate,
        i.rpe, i.bfr_pressure_mmhg, i.bfr_safe
    from public.sessions s
    join cfg on cfg.session_id = s.id
    left join legs on legs.session_id = s.id
    left join public.session_inputs i on i.session_id = s.id
)
select session_id, patient_id, recorded_at, status, scoring_configuration_id, channels,
    compliance, symmetry, effort, game, bfr_gate, rpe, bfr_pressure_mmhg, bfr_safe,
    case when (weight_compliance > 0 and compliance is null)
           or (weight_symmetry > 0 and symmetry is null)
           or (weight_effort > 0 and effort is null)
           or (weight_game > 0 and game is null) then null
         else (weight_compliance * coalesce(compliance, 0)
               + weight_symmetry * coalesce(symmetry, 0)
               + weight_effort * coalesce(effort, 0)
               + weight_game * coalesce(game, 0)) * bfr_gate end as performance_score
from parts;
comment on view public.session_scores is
    'GHOSTLY+ performance score per session from stored parameters, session_inputs and '
    'scoring_configuration (fractions 0..1; NULL while a weighted component is missing)';

-- Per patient: completed sessions against sessions_per_week (5) since the first one.
-- protocol_day counts the first session's day as day 1; sessions_expected =
-- sessions_per_week x protocol_day / 7; adherence = completed / expected, at most 1, NULL before
-- day 3 (too early to judge).
create view public.patient_adherence with (security_invoker = true) as
with done as (
    select s.patient_id,
        min(coalesce(s.recorded_at, s.created_at))::date as first_session_on,
        max(coalesce(s.recorded_at, s.created_at))::date as last_session_on,
        count(*) as sessions_completed
    from public.sessions s
    where s.patient_id is not null and s.status = 'completed'
    group by s.patient_id
),
sized as (
    select d.*, (current_date - d.first_session_on + 1) as protocol_day,
        (select c.sessions_per_week from public.scoring_configuration c
         where c.patient_id = d.patient_id or c.patient_id is null
         order by c.patient_id nulls last limit 1) as sessions_per_week
    from done d
)
select patient_id, first_session_on, last_session_on, protocol_day, sessions_per_week,
    sessions_completed,
    sessions_per_week * protocol_day / 7.0 as sessions_expected,
    case when protocol_day >= 3
        then least(sessions_completed / (sessions_per_week * protocol_day / 7.0), 1) end
        as adherence
from sized;
comment on view public.patient_adherence is
    'Per patient: completed sessions against the protocol''s sessions_per_week since the first '
    'session (adherence 0..1, NULL before protocol day 3)';

-- Per patient, channel and session day: what the therapist follows over the treatment.
create view public.patient_progress with (security_invoker = true) as
select s.patient_id, p.name as channel,
    coalesce(s.recorded_at, s.created_at)::date as session_date,
    count(*) as sessions,
    sum(p.contractions_total) as contractions_total,
    sum(p.contractions_good) as contractions_good,
    sum(p.contractions_mvc_compliant) as contractions_mvc_compliant,
    sum(p.contractions_duration_compliant) as contractions_duration_compliant,
    avg(public.channel_compliance(p.contractions_total, p.contractions_mvc_compliant,
        p.contractions_duration_compliant, p.expected_contractions, c.weight_completion,
        c.weight_intensity, c.weight_duration)) as compliance,
    max(p.mvc_value) as mvc_value,
    avg(p.rms) as rms,
    avg(p.mpf_hz) as mpf_hz,
    avg(p.mdf_hz) as mdf_hz,
    sum(p.time_under_tension_ms) as time_under_tension_ms
from public.sessions s
join public.session_parameters p on p.session_id = s.id and p.usable
cross join lateral (
    select c.* from public.scoring_configuration c
    where c.patient_id = s.patient_id or c.patient_id is null
    order by c.patient_id nulls last limit 1) c
where s.patient_id is not null and s.status = 'completed'
group by s.patient_id, p.name, coalesce(s.recorded_at, s.created_at)::date;
comment on view public.patient_progress is
    'Per patient, channel and session date: contraction counts, compliance, MVC, amplitude and '
    'spectral means of the completed sessions';

-- ---------------------------------------------------------------------------------------------
-- grants and row level security
-- ---------------------------------------------------------------------------------------------

revoke all on public.patient_emg_settings, public.session_inputs, public.scoring_configuration,
    public.session_scores, public.patient_adherence, public.patient_progress
    from public, anon, authenticated;
grant select, insert, update, delete on public.patient_emg_settings, public.session_inputs,
    public.scoring_configuration to authenticated;
grant select on public.session_scores, public.patient_adherence, public.patient_progress
    to authenticated;
grant all on public.patient_emg_settings, public.session_inputs, public.scoring_configuration,
    public.session_scores, public.patient_adherence, public.patient_progress to service_role;

-- May the current user change this patient's clinical data? (active therapist, admin) A policy
-- helper, so it lives beside the others, out of the API's reach.
create function emgd_private.can_treat_patient(patient_id uuid) returns boolean
    language sql
    stable
    security definer
    set search_path = ''
as $$
    select emgd_private.is_admin() or (can_treat_patient.patient_id is not null
                                 and emgd_private.is_therapist_of(can_treat_patient.patient_id))
$$;
revoke all on function emgd_private.can_treat_patient(uuid) from public, anon;
grant execute on function emgd_private.can_treat_patient(uuid) to authenticated, service_role;

alter table public.patient_emg_settings enable row level security;
alter table public.session_inputs enable row level security;
alter table public.scoring_configuration enable row level security;

-- patient_emg_settings: the global row is readable by every signed-in user (it is no one's
-- data) and written by admins; a patient's rows by that patient (read) and their care team.
create policy patient_emg_settings_select on public.patient_emg_settings
    for select to authenticated
    using (patient_id is null or emgd_private.can_read_patient(patient_id));
create policy patient_emg_settings_insert on public.patient_emg_settings
    for insert to authenticated
    with check (case when patient_id is null then emgd_private.is_admin()
                     else emgd_private.can_treat_patient(patient_id) end);
create policy patient_emg_settings_update on public.patient_emg_settings
    for update to authenticated
    using (case when patient_id is null then emgd_private.is_admin()
                else emgd_private.can_treat_patient(patient_id) end)
    with check (case when patient_id is null then emgd_private.is_admin()
                     else emgd_private.can_treat_patient(patient_id) end);
create policy patient_emg_settings_delete on public.patient_emg_settings
    for delete to authenticated
    using (patient_id is not null and emgd_private.can_treat_patient(patient_id)
           or patient_id is null and emgd_private.is_admin() and channel is not null);

-- session_inputs: through the session's patient
create policy session_inputs_select on public.session_inputs
    for select to authenticated
    using (exists (select 1 from public.sessions s
                   where s.id = session_id and emgd_private.can_read_patient(s.patient_id)));
create policy session_inputs_insert on public.session_inputs
    for insert to authenticated
    with check (exists (select 1 from public.sessions s
                        where s.id = session_id and emgd_private.can_treat_patient(s.patient_id)));
create policy session_inputs_update on public.session_inputs
    for update to authenticated
    using (exists (select 1 from public.sessions s
                   where s.id = session_id and emgd_private.can_treat_patient(s.patient_id)))
    with check (exists (select 1 from public.sessions s
                        where s.id = session_id and emgd_private.can_treat_patient(s.patient_id)));
create policy session_inputs_delete on public.session_inputs
    for delete to authenticated
    using (exists (select 1 from public.sessions s
                   where s.id = session_id and emgd_private.can_treat_patient(s.patient_id)));

-- scoring_configuration: like the settings
create policy scoring_configuration_select on public.scoring_configuration
    for select to authenticated
    using (patient_id is null or emgd_private.can_read_patient(patient_id));
create policy scoring_configuration_insert on public.scoring_configuration
    for insert to authenticated
    with check (case when patient_id is null then emgd_private.is_admin()
                     else emgd_private.can_treat_patient(patient_id) end);
create policy scoring_configuration_update on public.scoring_configuration
    for update to authenticated
    using (case when patient_id is null then emgd_private.is_admin()
                else emgd_private.can_treat_patient(patient_id) end)
    with check (case when patient_id is null then emgd_private.is_admin()
                     else emgd_private.can_treat_patient(patient_id) end);
create policy scoring_configuration_delete on public.scoring_configuration
    for delete to authenticated
    using (patient_id is not null and emgd_private.can_treat_patient(patient_id));

-- The daemon's view of the options; the queue functions stay private.
revoke all on function emgd.requeue_patient(uuid, uuid), emgd.analysis_options(uuid),
    emgd.on_patient_emg_settings(), emgd.validate_patient_emg_settings(),
    emgd.validate_session_inputs(), emgd.validate_scoring_configuration()
    from public, anon, authenticated;
grant execute on function emgd.requeue_patient(uuid, uuid), emgd.analysis_options(uuid)
    to service_role;
