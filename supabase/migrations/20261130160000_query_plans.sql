-- Indexes and vacuum settings for production-sized tables (100k sessions, 1M contractions, a
-- queue that is 99% finished jobs); tests/test_query_plans.py holds the plans to them.

-- The app's main list: a patient's (or a therapist's patients') sessions, newest first. With the
-- date in the index each patient's sessions come out already ordered, and a page of 50 reads 50
-- index entries per patient instead of all of them plus a sort. It also serves every lookup by
-- patient_id alone (RLS, the users foreign key), so the single-column index goes.
create index if not exists sessions_patient_recorded_idx
    on public.sessions (patient_id, recorded_at desc);
drop index if exists public.sessions_patient_idx;

-- The claim and the rescue read partial indexes (pending; running), so finished jobs never enter
-- them. What finished jobs still cost is dead index entries left by each claim and commit until
-- vacuum removes them: the claim walks past those. Vacuum the queue after 1% of it changed (the
-- default waits for 20%: 20,000 dead rows in a 100k-job table), and keep its statistics fresh.
alter table emgd.jobs set (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 500,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_analyze_threshold = 500
);
