-- Who may add, replace, move and delete recordings in the bucket (docs/security.md, "Storage").
-- Storage runs each request as the user (RLS decides) with storage.allow_delete_query set.
begin;
\ir _world.psql
select plan(14);

create function pg_temp.upload(name text) returns void language sql as $$
    insert into storage.objects (bucket_id, name, owner_id, metadata, version)
    values ('c3d-examples', name, auth.uid()::text, '{"size": 3}', gen_random_uuid()::text)
$$;
create function pg_temp.upsert(name text) returns void language sql as $$
    insert into storage.objects (bucket_id, name, owner_id, metadata, version)
    values ('c3d-examples', name, auth.uid()::text, '{"size": 3}', gen_random_uuid()::text)
    on conflict (bucket_id, name) do update set version = excluded.version
$$;

select pg_temp.act_as(:'P');
select lives_ok(format('select pg_temp.upload(%L)', :'P' || '/new.c3d'), 'a patient adds a recording to their folder');
select lives_ok(format('select pg_temp.upsert(%L)', :'P' || '/p.c3d'), 'a patient replaces their own recording');
select throws_ok(format('select pg_temp.upload(%L)', :'Q' || '/new.c3d'), '42501', null, 'a patient cannot upload into another patient''s folder');
reset role;

select pg_temp.act_as(:'T');
select lives_ok(format('select pg_temp.upload(%L)', :'P' || '/by-therapist.c3d'), 'an active therapist adds a recording for their patient');
select throws_ok(format('select pg_temp.upsert(%L)', :'P' || '/p.c3d'), '42501', null, 'a therapist cannot overwrite a patient''s recording');
select results_eq(format($$with u as (update storage.objects set version = 'v2' where name = %L returning 1) select count(*)::int from u$$, :'P' || '/p.c3d'), array[0], 'a therapist cannot replace a recording by update');
select results_eq(format($$with u as (update storage.objects set name = %L where name = %L returning 1) select count(*)::int from u$$, :'P' || '/moved.c3d', :'P' || '/p.c3d'), array[0], 'a therapist cannot move a recording');
select set_config('storage.allow_delete_query', 'true', true);
select results_eq('with d as (delete from storage.objects returning 1) select count(*)::int from d', array[0], 'a therapist cannot delete a recording');
reset role;

select pg_temp.act_as(:'I');
select throws_ok(format('select pg_temp.upload(%L)', :'P' || '/by-inactive.c3d'), '42501', null, 'an inactive therapist cannot add recordings');
reset role;

select pg_temp.act_as(:'A');
select results_eq(format($$with d as (delete from storage.objects where name = %L returning 1) select count(*)::int from d$$, :'Q' || '/q.c3d'), array[1], 'an admin deletes a recording');
reset role;

-- as on current Supabase: rows leave storage tables only through the Storage API
select set_config('storage.allow_delete_query', 'false', true);
select throws_ok('delete from storage.objects', '42501', null, 'a plain SQL DELETE on storage.objects is refused');

select isnt((select file_size_limit from storage.buckets where id = 'c3d-examples'), null, 'the bucket limits the file size');
select ok((select 'application/octet-stream' = any (allowed_mime_types) from storage.buckets where id = 'c3d-examples'), 'the bucket accepts C3D uploads');
select ok((select not public from storage.buckets where id = 'c3d-examples'), 'the bucket is private');

select * from finish();
rollback;
