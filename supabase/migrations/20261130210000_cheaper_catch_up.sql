-- emgd.catch_up, run by every daemon on each (re)connect, compared every object with its session
-- and job with cheap hash joins, but asked emgd.is_c3d first, for every object: two function
-- calls and a read of emgd.config per object (27 us each; 0.8 s of CPU per connect with 30,000
-- objects). Now the joins pick the objects whose session or job is missing or points at another
-- version, and only those few are asked whether they are C3D sessions at all. What it finds and
-- enqueues is unchanged (the body of 20261130141000_object_lifecycle.sql).

create or replace function emgd.catch_up() returns int
    language sql
    security definer
    set search_path = ''
as $$
    with candidates as materialized (
        select o.bucket_id, o.name, o.id, o.version, o.metadata
        from storage.objects o
        left join public.sessions s on s.bucket_id = o.bucket_id and s.object_name = o.name
        left join emgd.jobs j on j.session_id = s.id
        where s.id is null or j.id is null
           or s.object_version is distinct from o.version
           or s.object_id is distinct from o.id
    )
    select count(emgd.enqueue_object(c.bucket_id, c.name, c.id, c.version,
                                     nullif(c.metadata ->> 'size', '')::bigint))::int
    from candidates c
    where emgd.is_c3d(c.bucket_id, c.name)
      and not exists (
          select 1 from emgd.dismissed_objects d
          where d.bucket_id = c.bucket_id and d.object_name = c.name
            and d.object_version is not distinct from c.version);
$$;

-- CREATE OR REPLACE keeps a function's privileges; stated again so this file reads on its own.
revoke all on function emgd.catch_up() from public, anon, authenticated;
grant execute on function emgd.catch_up() to service_role;
