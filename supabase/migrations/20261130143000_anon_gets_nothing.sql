-- The app signs in: anon needs nothing in public. Supabase's default privileges grant anon ALL on
-- every new table, view and sequence there, leaving RLS (which a view without security_invoker
-- skips, and a table created without it lacks) as the only guard. New relations now start with
-- nothing for anon; a migration that wants anon to read something grants it explicitly.
alter default privileges in schema public revoke all on tables from anon;
alter default privileges in schema public revoke all on sequences from anon;
revoke all on all tables in schema public from anon;
revoke all on all sequences in schema public from anon;
