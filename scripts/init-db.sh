#!/usr/bin/env bash
# Run once by the PostgreSQL image's entrypoint when it creates a new data volume
# (/docker-entrypoint-initdb.d, see docker-compose.yml), as POSTGRES_USER in POSTGRES_DB:
#   - creates the extensions the hub uses (the migrations would, too, where allowed);
#   - when DB_READONLY_PASSWORD is set, creates the login DB_READONLY_USER (default `reporting`)
#     that may read every table, present and future, and write none: the spec's read-only user for
#     reporting tools.
# Safe to run again by hand: every step checks first.
set -euo pipefail

: "${POSTGRES_USER:?POSTGRES_USER is not set (the PostgreSQL image sets it)}"
: "${POSTGRES_DB:?POSTGRES_DB is not set (the PostgreSQL image sets it)}"

psql=(psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet --username "$POSTGRES_USER" --dbname "$POSTGRES_DB")

"${psql[@]}" <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS timescaledb;
CREATE EXTENSION IF NOT EXISTS "uuid-ossp";
SQL
echo "init-db: extensions timescaledb and uuid-ossp are present in $POSTGRES_DB"

if [ -n "${DB_READONLY_PASSWORD:-}" ]; then
  readonly_user="${DB_READONLY_USER:-reporting}"
  "${psql[@]}" -v ro_user="$readonly_user" -v ro_password="$DB_READONLY_PASSWORD" \
    -v owner="$POSTGRES_USER" -v db="$POSTGRES_DB" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'ro_user', :'ro_password')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'ro_user') \gexec
GRANT CONNECT ON DATABASE :"db" TO :"ro_user";
GRANT USAGE ON SCHEMA public TO :"ro_user";
GRANT SELECT ON ALL TABLES IN SCHEMA public TO :"ro_user";
-- Tables the migrations create later (as the owner) are readable too.
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public GRANT SELECT ON TABLES TO :"ro_user";
SQL
  echo "init-db: read-only login $readonly_user may read every table in $POSTGRES_DB"
fi
