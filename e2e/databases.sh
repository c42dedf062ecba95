#!/usr/bin/env bash
# Real database servers for the rotation tests (tests/rotation_databases.rs).
#
#   e2e/databases.sh start   PostgreSQL on 127.0.0.1:55432 and MariaDB on 127.0.0.1:53306, both
#                            with TLS (a throwaway CA made here), an admin user that may create
#                            users, and a database `coffer_test`; writes the connection details as
#                            `export` lines to ~/.cache/coffer/databases.env. Idempotent: servers
#                            already running are kept, with the same admin passwords.
#   e2e/databases.sh stop    Stops both (the data stays, for the next start).
#
# Installs nothing: the PostgreSQL server binaries (Debian's `postgresql`), MariaDB's
# (`mariadb-server`) and `openssl` must be there (.ci/run installs them). No systemd is needed:
# the servers run in the background, as the `postgres` and `mysql` users when run as root.
set -euo pipefail

STATE=${COFFER_DB_DIR:-/tmp/coffer-db}
CACHE=${COFFER_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/coffer}
ENV_FILE=$CACHE/databases.env
PG_PORT=${COFFER_PG_PORT:-55432}
MY_PORT=${COFFER_MYSQL_PORT:-53306}
ADMIN=coffer_admin
DATABASE=coffer_test

log() { printf '== databases: %s\n' "$*" >&2; }
die() { printf 'databases.sh: %s\n' "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" = 0 ]; }

# Runs a command as the server's own user when root (PostgreSQL refuses to run as root).
as_user() {
    local user=$1; shift
    if is_root; then runuser -u "$user" -- "$@"; else "$@"; fi
}

pg_bin() {
    local dir
    dir=$(find /usr/lib/postgresql -maxdepth 1 -mindepth 1 -type d 2>/dev/null | sort -V | tail -n 1)
    [ -n "$dir" ] && [ -x "$dir/bin/initdb" ] || die "PostgreSQL server binaries not found (apt-get install postgresql)"
    printf '%s/bin' "$dir"
}

# A password kept in the state directory, so a restart keeps the admin users' passwords.
password_file() {
    local file=$STATE/$1.password
    if [ ! -s "$file" ]; then
        umask 077
        openssl rand -hex 24 >"$file"
    fi
    cat "$file"
}

# One CA and one server certificate (localhost, 127.0.0.1) for both servers.
make_tls() {
    local dir=$STATE/tls
    [ -s "$dir/server.pem" ] && return 0
    command -v openssl >/dev/null || die "openssl not found"
    mkdir -p "$dir"
    (
        cd "$dir"
        umask 077
        openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=coffer test CA" \
            -keyout ca.key -out ca.pem 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
            -keyout server.key -out server.csr 2>/dev/null
        printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >ext.cnf
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
            -extfile ext.cnf -out server.pem 2>/dev/null
        chmod 644 ca.pem server.pem
    )
}

# A copy of the server key that only `user` can read (each server insists on that).
key_for() {
    local user=$1 target=$2
    install -m 600 "$STATE/tls/server.key" "$target"
    if is_root; then chown "$user" "$target"; fi
}

pg_start() {
    local bin data=$STATE/postgres password
    bin=$(pg_bin)
    password=$(password_file postgres)
    mkdir -p "$data"
    if is_root; then chown postgres "$data"; fi
    if [ ! -s "$data/PG_VERSION" ]; then
        log "PostgreSQL: initdb in $data"
        as_user postgres "$bin/initdb" -D "$data" -U postgres --auth-local=trust \
            --auth-host=scram-sha-256 >/dev/null
        key_for postgres "$data/server.key"
        cp "$STATE/tls/server.pem" "$data/server.crt"
        if is_root; then chown postgres "$data/server.crt"; fi
        cat >>"$data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$data'
ssl = on
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'
password_encryption = 'scram-sha-256'
EOF
    fi
    if ! as_user postgres "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
        log "PostgreSQL: starting on 127.0.0.1:$PG_PORT"
        as_user postgres "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 start >/dev/null
    fi
    # Runs as the postgres user over the socket (trust), so this also repairs a lost password.
    as_user postgres "$bin/psql" -h "$data" -p "$PG_PORT" -U postgres -d postgres -q \
        -v ON_ERROR_STOP=1 -v admin="$ADMIN" -v pw="$password" -v db="$DATABASE" >/dev/null <<'EOF'
SELECT format('CREATE ROLE %I', :'admin')
  WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'admin') \gexec
ALTER ROLE :"admin" WITH LOGIN SUPERUSER CREATEROLE PASSWORD :'pw';
SELECT format('CREATE DATABASE %I', :'db')
  WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \gexec
EOF
}

pg_stop() {
    local bin data=$STATE/postgres
    [ -s "$data/PG_VERSION" ] || return 0
    bin=$(pg_bin)
    if as_user postgres "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
        log "PostgreSQL: stopping"
        as_user postgres "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null
    fi
}

my_server() {
    command -v mariadbd 2>/dev/null || command -v mysqld 2>/dev/null ||
        die "MariaDB server not found (apt-get install mariadb-server)"
}

my_client() {
    local user
    user=$(id -un)
    mariadb --no-defaults --socket="$STATE/mariadb/mysqld.sock" -u "$user" "$@"
}

my_running() {
    local pid
    [ -s "$STATE/mariadb/mysqld.pid" ] || return 1
    pid=$(cat "$STATE/mariadb/mysqld.pid")
    kill -0 "$pid" 2>/dev/null && my_client -e 'SELECT 1' >/dev/null 2>&1
}

my_start() {
    local server data=$STATE/mariadb password user=mysql
    server=$(my_server)
    password=$(password_file mariadb)
    is_root || user=$(id -un)
    mkdir -p "$data"
    if is_root; then chown mysql "$data"; fi
    if [ ! -d "$data/db/mysql" ]; then
        log "MariaDB: mariadb-install-db in $data/db"
        mariadb-install-db --no-defaults --user="$user" --datadir="$data/db" \
            --auth-root-authentication-method=socket --skip-test-db >"$data/install.log" 2>&1 ||
            { cat "$data/install.log" >&2; die "mariadb-install-db failed"; }
        key_for mysql "$data/server.key"
    fi
    if ! my_running; then
        log "MariaDB: starting on 127.0.0.1:$MY_PORT"
        # setsid: the server outlives this script and the shell that ran it.
        setsid "$server" --no-defaults --user="$user" --datadir="$data/db" \
            --bind-address=127.0.0.1 --port="$MY_PORT" --socket="$data/mysqld.sock" \
            --pid-file="$data/mysqld.pid" --log-error="$data/error.log" --skip-name-resolve \
            --ssl-ca="$STATE/tls/ca.pem" --ssl-cert="$STATE/tls/server.pem" \
            --ssl-key="$data/server.key" </dev/null >/dev/null 2>&1 &
        local waited=0
        until my_running; do
            sleep 0.5
            waited=$((waited + 1))
            if [ "$waited" -gt 120 ]; then
                tail -n 30 "$data/error.log" >&2 || true
                die "MariaDB did not start within 60 s"
            fi
        done
    fi
    # Anonymous users would shadow ours; the admin may create users and grant anything.
    my_client >/dev/null <<EOF
DELETE FROM mysql.global_priv WHERE User = '';
FLUSH PRIVILEGES;
CREATE USER IF NOT EXISTS '$ADMIN'@'%';
ALTER USER '$ADMIN'@'%' IDENTIFIED BY '$password';
GRANT ALL PRIVILEGES ON *.* TO '$ADMIN'@'%' WITH GRANT OPTION;
CREATE DATABASE IF NOT EXISTS \`$DATABASE\`;
EOF
}

my_stop() {
    local data=$STATE/mariadb pid
    [ -s "$data/mysqld.pid" ] || return 0
    pid=$(cat "$data/mysqld.pid")
    if kill -0 "$pid" 2>/dev/null; then
        log "MariaDB: stopping"
        kill "$pid"
        for _ in $(seq 1 120); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
    fi
    rm -f "$data/mysqld.pid"
}

write_env() {
    mkdir -p "$CACHE"
    local tmp=$ENV_FILE.tmp
    (
        umask 077
        cat >"$tmp" <<EOF
# Written by e2e/databases.sh start: the servers tests/rotation_databases.rs rotates against.
export COFFER_TEST_DB_CA=$STATE/tls/ca.pem
export COFFER_TEST_PG_HOST=127.0.0.1
export COFFER_TEST_PG_PORT=$PG_PORT
export COFFER_TEST_PG_USER=$ADMIN
export COFFER_TEST_PG_PASSWORD=$(password_file postgres)
export COFFER_TEST_PG_DATABASE=$DATABASE
export COFFER_TEST_MYSQL_HOST=127.0.0.1
export COFFER_TEST_MYSQL_PORT=$MY_PORT
export COFFER_TEST_MYSQL_USER=$ADMIN
export COFFER_TEST_MYSQL_PASSWORD=$(password_file mariadb)
export COFFER_TEST_MYSQL_DATABASE=$DATABASE
EOF
    )
    mv "$tmp" "$ENV_FILE"
    log "connection details in $ENV_FILE"
}

case ${1:-} in
start)
    mkdir -p "$STATE"
    chmod 755 "$STATE"
    make_tls
    pg_start
    my_start
    write_env
    ;;
stop)
    pg_stop
    my_stop
    ;;
*)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
