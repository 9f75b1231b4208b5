-- Deletes and moves keep results honest (docs/jobs.md, "Deletes and moves").
begin;
\ir _world.psql
select plan(7);

-- a delete through Storage (as an admin, allow_delete_query set) takes the session and results
select pg_temp.act_as(:'A');
select set_config('storage.allow_delete_query', 'true', true);
delete from storage.objects where name = :'Q' || '/q.c3d';
reset role;
select is((select count(*)::int from public.sessions where patient_id = :'Q'), 0, 'a deleted recording''s session is gone');
select is((select count(*)::int from public.contractions c join public.sessions s on s.id = c.session_id where s.patient_id = :'Q'), 0, 'and its results');

-- a move (Storage: an UPDATE of name and version) leaves nothing under the old name
update storage.objects set name = :'Q' || '/from-p.c3d', version = 'v9' where name = :'P' || '/p.c3d';
select is((select count(*)::int from public.sessions where object_name = :'P' || '/p.c3d'), 0, 'a moved recording''s old session is gone');
select is((select patient_id::text from public.sessions where object_name = :'Q' || '/from-p.c3d'), :'Q', 'the new name has a session for its new patient');

-- a session an admin deleted stays deleted at catch-up, until a new version
select pg_temp.act_as(:'A');
delete from public.sessions where object_name = :'Q' || '/from-p.c3d';
reset role;
select is(emgd.catch_up(), 0, 'catch-up does not bring a deleted session back');
select is((select count(*)::int from public.sessions), 0, 'no session at all');
update storage.objects set version = 'v10' where name = :'Q' || '/from-p.c3d';
select is((select count(*)::int from public.sessions), 1, 'a new version is a new session');

select * from finish();
rollback;
