-- What the API roles can reach beyond the tables: sequences, RPCs, error messages.
begin;
\ir _world.psql
select plan(8);

select pg_temp.act_as(null, 'anon');
select throws_ok($$select setval('public.contractions_id_seq', 9223372036854775000)$$, '42501', null, 'anon cannot move a sequence');
reset role;
select pg_temp.act_as(:'P');
select throws_ok($$select setval('public.session_parameters_id_seq', 9223372036854775000)$$, '42501', null, 'a user cannot move a sequence');
reset role;

select is_empty($$
    select p.oid::regprocedure::text from pg_proc p join pg_namespace n on n.oid = p.pronamespace
    where n.nspname = 'public' and p.prosecdef
      and p.proname not in ('set_mvc_reference')  -- an RPC on purpose; checks its caller first
      and (has_function_privilege('anon', p.oid, 'execute')
           or has_function_privilege('authenticated', p.oid, 'execute'))
$$, 'no SECURITY DEFINER function in public is an RPC by accident');
select ok(not has_function_privilege('anon', 'emgd_private.is_admin()', 'execute'), 'anon cannot call the policy helpers');
select ok(not has_schema_privilege('authenticated', 'emgd', 'usage'), 'the queue schema is closed to users');

-- a forged assignment is refused the same way whoever it names: no role or existence leaks
select pg_temp.act_as(:'P');
select throws_ok(format($$insert into public.therapist_patients (therapist_id, patient_id) values (%L, %L)$$, :'A', :'Q'), '42501', 'new row violates row-level security policy for table "therapist_patients"', 'naming an admin reveals nothing');
select throws_ok(format($$insert into public.therapist_patients (therapist_id, patient_id) values (%L, %L)$$, gen_random_uuid(), :'Q'), '42501', 'new row violates row-level security policy for table "therapist_patients"', 'naming nobody gets the same answer');
reset role;
select pg_temp.act_as(:'A');
select throws_ok(format($$insert into public.therapist_patients (therapist_id, patient_id) values (%L, %L)$$, :'A', :'Q'), '23514', null, 'an admin gets the real reason');
reset role;

select * from finish();
rollback;
