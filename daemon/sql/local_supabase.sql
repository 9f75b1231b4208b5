-- A local stand-in for the parts of Supabase that emgd's migrations build on.
--
-- Plain PostgreSQL lacks Supabase's roles, the auth and storage schemas and their helper
-- functions. This file creates them, and only those that are missing, so running it against a
-- real Supabase project (or twice) changes nothing. Definitions follow Supabase's own:
-- supabase/auth migrations (auth.uid/role/jwt, latest form with search_path '') and
-- supabase/storage tenant migrations (storage.buckets/objects and foldername/filename/extension).
-- It is not a migration: supabase/migrations must stay deployable to a real project.

-- Roles are cluster-wide, so two test sessions on one server may race to create them; the
-- loser's duplicate error is swallowed instead of failing its whole set-up.
do $$
declare
    spec record;
begin
    for spec in
        select * from (values
            ('anon', 'nologin noinherit'),
            ('authenticated', 'nologin noinherit'),
            ('service_role', 'nologin noinherit bypassrls'),
            ('authenticator', 'login noinherit')
        ) as t(rolname, options)
    loop
        if not exists (select 1 from pg_catalog.pg_roles where rolname = spec.rolname) then
            begin
                execute format('create role %I %s', spec.rolname, spec.options);
            exception when duplicate_object or unique_violation then
                null;
            end;
        end if;
    end loop;
end
$$;

-- PostgREST logs in as authenticator and switches to these roles per request.
grant anon, authenticated, service_role to authenticator;

create schema if not exists auth;
create schema if not exists storage;
create schema if not exists extensions;

grant usage on schema public, auth, storage, extensions to anon, authenticated, service_role;

-- Supabase grants the API roles everything on objects created in public and storage and relies
-- on RLS alone; doing the same here keeps local RLS tests as strict as the real thing.
-- Once per database, as Supabase does at project creation: a migration that revokes some of it
-- must not see it granted again by the next `emgd migrate`.
do $$
begin
    if not exists (select 1 from pg_catalog.pg_default_acl
                   where defaclnamespace = 'public'::regnamespace) then
        alter default privileges in schema public
            grant all on tables to anon, authenticated, service_role;
        alter default privileges in schema public
            grant all on sequences to anon, authenticated, service_role;
        alter default privileges in schema public
            grant all on functions to anon, authenticated, service_role;
    end if;
end
$$;

create table if not exists auth.users (
    instance_id uuid,
    id uuid primary key,
    aud varchar(255),
    role varchar(255),
    email varchar(255),
    raw_app_meta_data jsonb,
    raw_user_meta_data jsonb,
    is_super_admin boolean,
    created_at timestamptz default now(),
    updated_at timestamptz default now(),
    is_anonymous boolean not null default false
);

-- Supabase's helper functions, each created only when missing. auth.uid, auth.role and
-- auth.email read one claim of the request's JWT, alike but for the claim and its type.
do $$
declare
    claim constant text := $def$
        create function auth.%1$s() returns %2$s
            language sql stable
            set search_path to ''
        as $f$
          select
            coalesce(
              nullif(current_setting('request.jwt.claim.%3$s', true), ''),
              (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> '%3$s')
            )::%2$s
        $f$
$def$;
    fn record;
begin
    for fn in
        select * from (values
            ('auth', 'uid', format(claim, 'uid', 'uuid', 'sub')),
            ('auth', 'role', format(claim, 'role', 'text', 'role')),
            ('auth', 'email', format(claim, 'email', 'text', 'email')),
            ('auth', 'jwt', $def$
        create function auth.jwt() returns jsonb
            language sql stable
            set search_path to ''
        as $f$
          select
            coalesce(
              nullif(current_setting('request.jwt.claim', true), ''),
              nullif(current_setting('request.jwt.claims', true), '')
            )::jsonb
        $f$
$def$),
            ('storage', 'foldername', $def$
        create function storage.foldername(name text) returns text[]
            language plpgsql
        as $f$
        declare
            _parts text[];
        begin
            select string_to_array(name, '/') into _parts;
            return _parts[1:array_length(_parts, 1) - 1];
        end
        $f$
$def$),
            ('storage', 'filename', $def$
        create function storage.filename(name text) returns text
            language plpgsql
        as $f$
        declare
            _parts text[];
        begin
            select string_to_array(name, '/') into _parts;
            return _parts[array_length(_parts, 1)];
        end
        $f$
$def$),
            ('storage', 'extension', $def$
        create function storage.extension(name text) returns text
            language plpgsql
        as $f$
        declare
            _parts text[];
            _filename text;
        begin
            select string_to_array(name, '/') into _parts;
            select _parts[array_length(_parts, 1)] into _filename;
            return reverse(split_part(reverse(_filename), '.', 1));
        end
        $f$
$def$)
        ) as t(schema_name, function_name, definition)
    loop
        if not exists (
            select 1 from pg_catalog.pg_proc p join pg_catalog.pg_namespace n on n.oid = p.pronamespace
            where n.nspname = fn.schema_name and p.proname = fn.function_name
        ) then
            execute fn.definition;
        end if;
    end loop;
end
$$;

grant execute on function auth.uid(), auth.role(), auth.email(), auth.jwt()
    to anon, authenticated, service_role;

-- Only when missing: on a real project these belong to supabase_storage_admin and must not be
-- touched (Supabase forbids ALTER TABLE storage.objects).
do $$
begin
    if to_regclass('storage.buckets') is null then
        create table storage.buckets (
            id text not null primary key,
            name text not null,
            owner uuid,
            created_at timestamptz default now(),
            updated_at timestamptz default now(),
            public boolean default false,
            avif_autodetection boolean default false,
            file_size_limit bigint,
            allowed_mime_types text[],
            owner_id text
        );
        create unique index bname on storage.buckets using btree (name);
        alter table storage.buckets enable row level security;
        grant all on storage.buckets to anon, authenticated, service_role;
    end if;

    if to_regclass('storage.objects') is null then
        create table storage.objects (
            id uuid not null default gen_random_uuid() primary key,
            bucket_id text references storage.buckets (id),
            name text,
            owner uuid,
            created_at timestamptz default now(),
            updated_at timestamptz default now(),
            last_accessed_at timestamptz default now(),
            metadata jsonb,
            path_tokens text[] generated always as (string_to_array(name, '/')) stored,
            version text,
            owner_id text,
            user_metadata jsonb,
            constraint bucketid_objname unique (bucket_id, name)
        );
        comment on column storage.objects.owner is 'Field is deprecated, use owner_id instead';
        create index name_prefix_search on storage.objects (name text_pattern_ops);
        alter table storage.objects enable row level security;
        grant all on storage.objects to anon, authenticated, service_role;
        -- storage migration 0010: every UPDATE of an object refreshes updated_at
        create or replace function storage.update_updated_at_column() returns trigger
            language plpgsql
        as $f$
        begin
            new.updated_at = now();
            return new;
        end;
        $f$;
        create trigger update_objects_updated_at before update on storage.objects
            for each row execute function storage.update_updated_at_column();
    end if;
end
$$;

-- What the current Storage release (tenant migrations 0038, 0055, 0062) adds to those tables,
-- added here to a stand-in built by an older emgd as well; never to a real project's tables.
do $$
begin
    if not exists (select 1 from pg_catalog.pg_type t join pg_catalog.pg_namespace n
                   on n.oid = t.typnamespace where n.nspname = 'storage' and t.typname = 'buckettype')
    then
        create type storage.buckettype as enum ('STANDARD', 'ANALYTICS', 'VECTOR');
    end if;
    if not exists (select 1 from information_schema.columns
                   where table_schema = 'storage' and table_name = 'buckets'
                     and column_name = 'versioning_status') then
        alter table storage.buckets
            add column type storage.buckettype not null default 'STANDARD',
            add column versioning_status text not null default 'DISABLED',
            add constraint buckets_versioning_status_check
                check (versioning_status in ('DISABLED', 'ENABLED', 'SUSPENDED')),
            add constraint buckets_versioning_standard_only_check
                check (type = 'STANDARD' or versioning_status = 'DISABLED'),
            add constraint buckets_versioning_dark_check check (versioning_status = 'DISABLED');
    end if;
    if not exists (select 1 from information_schema.columns
                   where table_schema = 'storage' and table_name = 'objects'
                     and column_name = 'is_delete_marker') then
        alter table storage.objects
            add column archived_at timestamptz,
            add column is_delete_marker boolean not null default false,
            add column is_versioned boolean not null default false;
    end if;

    -- Storage migration 0055: rows leave storage.buckets and storage.objects only through the
    -- Storage API, whose requests set storage.allow_delete_query; a plain SQL DELETE (which would
    -- orphan the stored bytes) is refused.
    if not exists (select 1 from pg_catalog.pg_trigger
                   where tgrelid = 'storage.objects'::regclass
                     and tgname = 'protect_objects_delete') then
        create or replace function storage.protect_delete() returns trigger
            language plpgsql
        as $f$
        begin
            if coalesce(current_setting('storage.allow_delete_query', true), 'false') != 'true' then
                raise exception 'Direct deletion from storage tables is not allowed. Use the Storage API instead.'
                    using hint = 'This prevents accidental data loss from orphaned objects.',
                          errcode = '42501';
            end if;
            return null;
        end;
        $f$;
        create trigger protect_buckets_delete before delete on storage.buckets
            for each statement execute function storage.protect_delete();
        create trigger protect_objects_delete before delete on storage.objects
            for each statement execute function storage.protect_delete();
    end if;
end
$$;


grant execute on function storage.foldername(text), storage.filename(text), storage.extension(text)
    to anon, authenticated, service_role;
