-- The application role of one PostgreSQL server (the warehouse's `warehouse`, the metadata
-- database's `airflow`): it logs in and owns its database, nothing more. No SUPERUSER,
-- CREATEDB, CREATEROLE, REPLICATION or BYPASSRLS; the bootstrap superuser (POSTGRES_USER,
-- `postgres`) keeps those, and its password is in a Secret of its own.
--
-- The postgres image's entrypoint runs this file once, on an empty volume, as the bootstrap
-- superuser connected to the application database:
--   psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc \
--        --dbname "$POSTGRES_DB" -f <this file>
-- The role's name and password come from the environment (APP_USER, APP_PASSWORD) through
-- \getenv (psql 15+): never from a command line, which every process of the node can read.
-- Running it again is harmless: it only sets what is already set.

\set ON_ERROR_STOP on
-- Statements below carry the password: keep them out of the server log, even if one fails.
SET log_statement = 'none';
SET log_min_error_statement = 'panic';

\getenv app_user APP_USER
\getenv app_password APP_PASSWORD

\if :{?app_user}
\else
  DO $$ BEGIN RAISE EXCEPTION 'APP_USER is not set: it names the application role'; END $$;
\endif
\if :{?app_password}
\else
  DO $$ BEGIN RAISE EXCEPTION 'APP_PASSWORD is not set: it is the application role''s password'; END $$;
\endif
SELECT :'app_password' = '' AS app_password_empty,
       :'app_user' = current_user AS app_user_is_superuser,
       current_database() IN ('postgres', 'template0', 'template1') AS app_database_is_system
\gset
\if :app_password_empty
  DO $$ BEGIN RAISE EXCEPTION 'APP_PASSWORD is empty'; END $$;
\endif
\if :app_user_is_superuser
  DO $$ BEGIN RAISE EXCEPTION 'APP_USER is the bootstrap superuser (POSTGRES_USER): the application needs a role of its own'; END $$;
\endif
\if :app_database_is_system
  DO $$ BEGIN RAISE EXCEPTION 'POSTGRES_DB is a system database: the application needs a database of its own'; END $$;
\endif

SELECT format('CREATE ROLE %I', :'app_user')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'app_user')
\gexec

SELECT format(
  'ALTER ROLE %I WITH LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD %L',
  :'app_user', :'app_password')
\gexec

-- Owner of its database: it may create schemas and, since PostgreSQL 15 (the public schema
-- belongs to pg_database_owner), tables in public.
SELECT format('ALTER DATABASE %I OWNER TO %I', current_database(), :'app_user')
\gexec
-- Before 15 public belonged to the bootstrap superuser: hand it over the same way.
SELECT format('ALTER SCHEMA public OWNER TO %I', :'app_user')
  FROM pg_namespace
 WHERE nspname = 'public' AND nspowner::regrole::text NOT IN ('pg_database_owner', quote_ident(:'app_user'))
\gexec

-- Every role may connect to every database by default: the application's own is enough.
SELECT format('REVOKE CONNECT, TEMPORARY ON DATABASE %I FROM PUBLIC', datname)
  FROM pg_database
 WHERE datname <> current_database() AND datallowconn
\gexec
