#!/usr/bin/env bash
# Builds and installs TimescaleDB (Apache licence) for the running PostgreSQL 15 from Debian's own
# source package, then preloads it and restarts the cluster. Skips the build when the library is
# already installed. Needs root (apt-get, make install, the cluster's configuration).
#
# Why from source: Debian 12 ships no TimescaleDB package for PostgreSQL 15, and the Timescale apt
# repository is not reachable from these machines; Debian's archive is.
set -euo pipefail

PG_MAJOR="${PG_MAJOR:-15}"
PG_CLUSTER="${PG_CLUSTER:-main}"
TSDB_DEBIAN_VERSION="${TSDB_DEBIAN_VERSION:-2.19.3+dfsg-1+deb13u1}"
TSDB_SUITE="${TSDB_SUITE:-trixie}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

say() { printf 'install-timescaledb: %s\n' "$*"; }

pg_config="/usr/lib/postgresql/${PG_MAJOR}/bin/pg_config"
pkglibdir() { "$pg_config" --pkglibdir; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

build_and_install() {
  say "building TimescaleDB ${TSDB_DEBIAN_VERSION} (Apache licence) for PostgreSQL ${PG_MAJOR}; this takes a few minutes"
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends \
    "postgresql-server-dev-${PG_MAJOR}" cmake libssl-dev libkrb5-dev dpkg-dev build-essential >/dev/null

  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  # A private apt configuration that knows only the source suite, so the system's sources stay as
  # they are and no binary package of the newer suite can be installed by accident.
  mkdir -p "$work/apt/lists/partial" "$work/apt/cache/archives/partial" "$work/apt/etc/sources.list.d" \
    "$work/apt/etc/preferences.d"
  cat >"$work/apt/etc/sources.list" <<SOURCES
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] ${DEBIAN_MIRROR} ${TSDB_SUITE} main
SOURCES
  apt_opts=(
    -o "Dir::Etc::sourcelist=$work/apt/etc/sources.list"
    -o "Dir::Etc::sourceparts=$work/apt/etc/sources.list.d"
    -o "Dir::Etc::preferencesparts=$work/apt/etc/preferences.d"
    -o "Dir::State::Lists=$work/apt/lists"
    -o "Dir::Cache=$work/apt/cache"
    -o "APT::Sandbox::User=root"
  )
  as_root apt-get "${apt_opts[@]}" update -qq
  (cd "$work" && as_root apt-get "${apt_opts[@]}" source --download-only -qq "timescaledb=${TSDB_DEBIAN_VERSION}")
  (cd "$work" && dpkg-source --no-check -x ./timescaledb_*.dsc src >/dev/null)

  cmake -S "$work/src" -B "$work/build" \
    -DPG_CONFIG="$pg_config" \
    -DCMAKE_BUILD_TYPE=Release \
    -DAPACHE_ONLY=ON \
    -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF \
    -DSEND_TELEMETRY_DEFAULT=OFF -DUSE_TELEMETRY=OFF \
    -DWARNINGS_AS_ERRORS=OFF >/dev/null
  cmake --build "$work/build" -j "$(nproc)" >/dev/null
  as_root cmake --install "$work/build" >/dev/null
  say "installed into $(pkglibdir)"
}

preload_and_restart() {
  conf_dir="/etc/postgresql/${PG_MAJOR}/${PG_CLUSTER}/conf.d"
  conf_file="$conf_dir/timescaledb.conf"
  if [ ! -f "$conf_file" ] || ! grep -q "timescaledb" "$conf_file"; then
    as_root mkdir -p "$conf_dir"
    printf "shared_preload_libraries = 'timescaledb'\ntimescaledb.telemetry_level = off\n" | as_root tee "$conf_file" >/dev/null
    say "wrote $conf_file"
  fi
  preloaded="$(psql -h 127.0.0.1 -U postgres -Atc 'SHOW shared_preload_libraries' 2>/dev/null || true)"
  if [[ "$preloaded" != *timescaledb* ]]; then
    say "restarting PostgreSQL ${PG_MAJOR}/${PG_CLUSTER} with the library preloaded"
    as_root pg_ctlcluster --skip-systemctl-redirect "$PG_MAJOR" "$PG_CLUSTER" restart
  fi
  for _ in $(seq 1 30); do
    psql -h 127.0.0.1 -U postgres -Atc 'SELECT 1' >/dev/null 2>&1 && break
    sleep 1
  done
}

if [ ! -x "$pg_config" ]; then
  # pg_config comes with the server dev package; the server itself must already run.
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends "postgresql-server-dev-${PG_MAJOR}" >/dev/null
fi

if ls "$(pkglibdir)"/timescaledb-*.so >/dev/null 2>&1; then
  say "already installed in $(pkglibdir); skipping the build"
else
  build_and_install
fi
preload_and_restart

# The licence setting exists only once the extension is created, so ask a scratch database.
probe_db="tsdb_probe_$$"
psql -h 127.0.0.1 -U postgres -q -c "CREATE DATABASE $probe_db" >/dev/null
psql -h 127.0.0.1 -U postgres -d "$probe_db" -Atq \
  -c "CREATE EXTENSION timescaledb" \
  -c "SELECT 'timescaledb ' || extversion || ', licence ' || current_setting('timescaledb.license') FROM pg_extension WHERE extname = 'timescaledb'" \
  | sed 's/^/install-timescaledb: /' || true
psql -h 127.0.0.1 -U postgres -q -c "DROP DATABASE $probe_db" >/dev/null
