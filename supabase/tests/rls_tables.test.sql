-- Who sees and changes which rows of the public tables (docs/security.md, "Tables").
begin;
\ir _world.psql
select plan(20);

-- sessions: own, active therapist's, admin's view; nothing for an inactive therapist or anon
select pg_temp.act_as(:'P');
select results_eq('select count(*)::int from public.sessions', array[1], 'a patient sees their own session only');
select results_eq('select count(*)::int from public.contractions', array[1], 'a patient sees their own results only');
select results_eq($$select count(*)::int from public.users where role <> 'patient'$$, array[0], 'a patient sees no other user');
reset role;
select pg_temp.act_as(:'T');
select results_eq(format('select count(*)::int from public.sessions where patient_id = %L', :'P'), array[1], 'an active therapist sees their patient''s session');
select results_eq('select count(*)::int from public.sessions', array[1], 'an active therapist sees no other patient''s session');
reset role;
select pg_temp.act_as(:'I');
select results_eq('select count(*)::int from public.sessions', array[0], 'an inactive therapist sees nothing');
select results_eq('select count(*)::int from public.contractions', array[0], 'an inactive therapist sees no results');
reset role;
select pg_temp.act_as(:'A');
select results_eq('select count(*)::int from public.sessions', array[2], 'an admin sees every session');
reset role;
select pg_temp.act_as(null, 'anon');
select throws_ok('select count(*) from public.sessions', '42501', null, 'anon reads nothing');
select throws_ok('select count(*) from public.users', '42501', null, 'anon reads no profile');
reset role;

-- writes: results come from the daemon, sessions from storage, users and assignments from admins
select pg_temp.act_as(:'P');
select throws_ok($$update public.sessions set error = 'x'$$, '42501', null, 'a patient cannot change a session');
select throws_ok($$update public.contractions set is_good = false$$, '42501', null, 'a patient cannot change results');
select throws_ok(format($$insert into public.sessions (bucket_id, object_name, patient_id) values ('c3d-examples', 'forged.c3d', %L)$$, :'P'), '42501', null, 'a patient cannot forge a session');
select results_eq('with d as (delete from public.sessions returning 1) select count(*)::int from d', array[0], 'a patient cannot delete a session');
select results_eq($$with u as (update public.users set role = 'admin' returning 1) select count(*)::int from u$$, array[0], 'a patient cannot make themselves admin');
reset role;
select pg_temp.act_as(:'T');
select results_eq('with d as (delete from public.sessions returning 1) select count(*)::int from d', array[0], 'a therapist cannot delete a session');
select throws_ok(format($$insert into public.therapist_patients (therapist_id, patient_id) values (%L, %L)$$, :'T', :'Q'), '42501', null, 'a therapist cannot assign themselves a patient');
reset role;
select pg_temp.act_as(:'A');
select results_eq(format('with d as (delete from public.sessions where patient_id = %L returning 1) select count(*)::int from d', :'Q'), array[1], 'an admin deletes a session');
reset role;

-- the queue is private
select pg_temp.act_as(:'A');
select throws_ok('select count(*) from emgd.jobs', '42501', null, 'not even an admin reads the queue');
reset role;
select pg_temp.act_as(null, 'service_role');
select results_eq('select count(*)::int from emgd.jobs', array[1], 'service_role (the daemon) reads the queue');
reset role;

select * from finish();
rollback;
