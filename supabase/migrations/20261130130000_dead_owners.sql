-- Orphaned jobs are rescued within seconds of their daemon's death, not after the whole lease.
--
-- Each daemon holds a session-level advisory lock keyed by its owner id on a connection of its
-- own, for as long as the process lives. PostgreSQL frees the lock when that connection ends (the
-- process was killed, crashed, or its host vanished), so "running, but nobody holds the owner's
-- lock" means the owner is dead: rescue_expired puts such jobs back at once, as it does with
-- expired leases. A daemon that is merely paused keeps its connection and so its lock: its jobs
-- wait for the lease as before. The lease token still guards every write, so a wrong verdict can
-- only cost an analysis run twice, never a result committed twice.
--
-- Only owners that took the lock are judged by it: a daemon of an older release, still running
-- during an upgrade, never holds one, and its jobs keep waiting for their leases as before.
--
-- Just after the server (re)starts nobody holds any lock yet; live daemons need a moment to take
-- theirs again, so the lock test is skipped until the server has been up for a short while.

-- Two int4 keys: a fixed namespace, and 31 bits of the owner id. Two owners sharing a key only
-- make a dead one look alive (its jobs then wait for the lease), never the other way round.
create or replace function emgd.owner_lock_key(p_owner uuid)
returns int
language sql
immutable
parallel safe
set search_path = ''
as $$
    select (pg_catalog.hashtext(p_owner::text) & 2147483647)::int;
$$;

-- Owners that hold (or held) their lock; rows of dead owners are removed by rescue_expired.
create table emgd.lock_owners (
    owner uuid primary key,
    since timestamptz not null default now()
);
alter table emgd.lock_owners enable row level security;
revoke all on emgd.lock_owners from public, anon, authenticated;

-- Called by a daemon on its dedicated connection; true once this session holds the lock.
-- Session-level locks are counted: the daemon calls this once per connection.
create or replace function emgd.hold_owner_lock(p_owner uuid)
returns boolean
language plpgsql
security definer
set search_path = ''
as $$
begin
    if not pg_catalog.pg_try_advisory_lock(1701667172, emgd.owner_lock_key(p_owner)) then
        return false;
    end if;
    insert into emgd.lock_owners (owner) values (p_owner) on conflict (owner) do nothing;
    return true;
end;
$$;

create or replace function emgd.rescue_expired()
returns int
language plpgsql
security definer
set search_path = ''
as $$
declare
    n int;
    check_owners boolean :=
        clock_timestamp() - pg_catalog.pg_postmaster_start_time() > interval '15 seconds';
begin
    with live as (
        select l.objid
        from pg_catalog.pg_locks l
        where check_owners
          and l.locktype = 'advisory' and l.granted and l.objsubid = 2
          and l.classid = 1701667172
          and l.database = (select d.oid from pg_catalog.pg_database d
                            where d.datname = pg_catalog.current_database())
    ),
    expired as (
        select j.id, j.lease_expires_at < clock_timestamp() as lapsed
        from emgd.jobs j
        where j.state = 'running'
          and (j.lease_expires_at < clock_timestamp()
               or (check_owners
                   and exists (select 1 from emgd.lock_owners o where o.owner = j.lease_owner)
                   and not exists (
                       select 1 from live
                       where live.objid = emgd.owner_lock_key(j.lease_owner)::oid)))
        for update of j skip locked
    )
    update emgd.jobs j
    set state = case when j.attempts >= j.max_attempts then 'failed' else 'pending' end,
        last_error = case when expired.lapsed
            then 'the daemon processing this file stopped answering (lease expired)'
            else 'the daemon processing this file died' end,
        lease_owner = null, lease_token = null, lease_expires_at = null,
        run_after = now(),
        finished_at = case when j.attempts >= j.max_attempts then now() end
    from expired
    where j.id = expired.id;
    get diagnostics n = row_count;
    if check_owners then
        delete from emgd.lock_owners o
        where not exists (select 1 from pg_catalog.pg_locks l
                          where l.locktype = 'advisory' and l.granted and l.objsubid = 2
                            and l.classid = 1701667172
                            and l.objid = emgd.owner_lock_key(o.owner)::oid)
          and not exists (select 1 from emgd.jobs j
                          where j.state = 'running' and j.lease_owner = o.owner);
    end if;
    return n;
end;
$$;

revoke all on function emgd.owner_lock_key(uuid) from public;
revoke all on function emgd.hold_owner_lock(uuid) from public;
revoke all on function emgd.rescue_expired() from public;
grant execute on function emgd.owner_lock_key(uuid) to service_role;
grant execute on function emgd.hold_owner_lock(uuid) to service_role;
grant execute on function emgd.rescue_expired() to service_role;
