# Throwaway MariaDB and PostgreSQL for the tests. Sourced by scripts/test.
#
# Installs the Debian packages when the servers are missing, starts one instance of each in
# a temporary directory on a Unix socket, and on a free TCP port of 127.0.0.1 with TLS (a
# throwaway CA and server certificate made with openssl), exports DINGSYNC_TEST_MYSQL_URL
# and DINGSYNC_TEST_PG_URL (the sockets), DINGSYNC_TEST_MYSQL_TLS_URL and
# DINGSYNC_TEST_PG_TLS_URL (TCP, certificate verified against the CA) and
# DINGSYNC_TEST_WRONG_CA (a CA that signed nothing here), and stops both on exit. Any
# failure ends the script: a service the tests need is never silently skipped.

services_dir=""

die() { echo "scripts/test: $*" >&2; exit 1; }

apt_install() {
    [ "$(id -u)" = 0 ] || die "$1 is missing and installing it needs root: apt-get install $*"
    echo "scripts/test: installing $* from Debian packages" >&2
    if [ -z "${apt_updated:-}" ]; then
        apt-get update -qq || die "apt-get update failed"
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
        || die "apt-get install $* failed"
}

# A TCP port of 127.0.0.1 that nothing listens on now (the kernel's choice).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# $services_dir/tls: ca.pem, server.pem + server.key (CN localhost, SAN localhost and
# 127.0.0.1, signed by ca.pem) and wrong-ca.pem.
make_certs() {
    command -v openssl >/dev/null || apt_install openssl
    local dir="$services_dir/tls"
    mkdir -p "$dir"
    (
        cd "$dir"
        openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=dingsync test CA" \
            -keyout ca.key -out ca.pem
        openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=dingsync wrong CA" \
            -keyout wrong-ca.key -out wrong-ca.pem
        openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key -out server.csr
        printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' >server.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
            -extfile server.ext -out server.pem
    ) >"$dir/openssl.log" 2>&1 || { cat "$dir/openssl.log" >&2; die "openssl could not make the test certificates"; }
    chmod 644 "$dir"/*.pem
    chmod 600 "$dir"/*.key
    export DINGSYNC_TEST_WRONG_CA="$dir/wrong-ca.pem"
}

pg_bindir() {
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

# Bounded wait for a condition; fails loudly after $1 tenths of a second.
wait_for() {
    local tenths=$1; shift
    local i
    for ((i = 0; i < tenths; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}

start_mariadb() {
    command -v mariadbd >/dev/null || apt_install mariadb-server mariadb-client
    command -v mariadb-install-db >/dev/null || die "mariadb-install-db not found after install"
    local dir="$services_dir/mariadb"
    mkdir -p "$dir/data"
    local user_args=()
    [ "$(id -u)" = 0 ] && user_args=(--user=root)
    mariadb-install-db --no-defaults --datadir="$dir/data" "${user_args[@]}" \
        --auth-root-authentication-method=normal --skip-test-db >"$dir/install.log" 2>&1 \
        || { cat "$dir/install.log" >&2; die "MariaDB: mariadb-install-db failed"; }
    # The start and stop commands also go into the control script the restart test uses.
    # The buffer pool holds org_scale's 100k-user databases (about 190 MB each): with the
    # 64 MB it had, InnoDB (O_DIRECT, no help from the OS cache) read from disk and the
    # 100k re-push took 55-83 s instead of 30-40 s. It is reserved as it is touched.
    local port tls="$services_dir/tls"
    port=$(free_port)
    mariadb_start=(setsid mariadbd --no-defaults --datadir="$dir/data" --socket="$dir/mysqld.sock"
        --bind-address=127.0.0.1 --port="$port" --ssl-ca="$tls/ca.pem" --ssl-cert="$tls/server.pem"
        --ssl-key="$tls/server.key" --pid-file="$dir/mysqld.pid" --log-error="$dir/error.log" "${user_args[@]}"
        --innodb-buffer-pool-size=512M --innodb-flush-log-at-trx-commit=2 --max-connections=500)
    mariadb_pidfile="$dir/mysqld.pid"
    mariadb_ping=(mariadb-admin --no-defaults --socket="$dir/mysqld.sock" -uroot ping)
    "${mariadb_start[@]}" </dev/null >/dev/null 2>&1 &
    # Not this shell's job: the restart test kills and restarts the server by its pid file.
    disown
    if ! wait_for 600 "${mariadb_ping[@]}"; then
        cat "$dir/error.log" >&2
        die "MariaDB did not start within 60 s"
    fi
    export DINGSYNC_TEST_MYSQL_URL="mysql://root@localhost/mysql?socket=$dir/mysqld.sock"
    export DINGSYNC_TEST_MYSQL_TLS_URL="mysql://root@127.0.0.1:$port/mysql?ssl-mode=VERIFY_IDENTITY&ssl-ca=$tls/ca.pem"
    echo "scripts/test: MariaDB $(mariadbd --version | awk '{print $3}') on $dir/mysqld.sock" >&2
}

start_postgres() {
    [ -n "$(pg_bindir)" ] || apt_install postgresql
    local bin
    bin=$(pg_bindir)
    [ -x "$bin/initdb" ] || die "PostgreSQL initdb not found after install"
    local dir="$services_dir/postgres"
    mkdir -p "$dir"
    local as=()
    # The server's key, readable by the server's user only (PostgreSQL insists).
    cp "$services_dir/tls/server.pem" "$services_dir/tls/server.key" "$dir/"
    if [ "$(id -u)" = 0 ]; then
        id postgres >/dev/null 2>&1 || die "PostgreSQL must not run as root and user postgres is missing"
        chown postgres "$dir" "$dir/server.pem" "$dir/server.key"
        as=(runuser -u postgres --)
    fi
    local port
    port=$(free_port)
    "${as[@]}" "$bin/initdb" -D "$dir/data" -A trust -U postgres >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; die "PostgreSQL: initdb failed"; }
    pg_start=("${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60
        -o "-k $dir -c listen_addresses=127.0.0.1 -c port=$port -c ssl=on -c ssl_cert_file=$dir/server.pem -c ssl_key_file=$dir/server.key -c fsync=off -c max_connections=300" start)
    "${pg_start[@]}" >/dev/null || { cat "$dir/server.log" >&2; die "PostgreSQL did not start"; }
    pg_ctl_cmd=("${as[@]}" "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop)
    export DINGSYNC_TEST_PG_URL="postgres://postgres@localhost:$port/postgres?host=$dir"
    export DINGSYNC_TEST_PG_TLS_URL="postgres://postgres@127.0.0.1:$port/postgres?sslmode=verify-full&sslrootcert=$services_dir/tls/ca.pem"
    echo "scripts/test: PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on $dir" >&2
}

stop_mariadb() {
    local pid
    pid=$(cat "$mariadb_pidfile" 2>/dev/null) || return 0
    kill "$1" "$pid" 2>/dev/null || return 0
    wait_for 600 sh -c "! kill -0 $pid" || die "MariaDB (pid $pid) did not stop"
}

# A control script for the database-restart test: `ctl postgres|mariadb stop|start`.
# stop is a crash (SIGKILL / immediate shutdown); start returns once the server answers.
write_control_script() {
    local ctl="$services_dir/ctl"
    {
        echo '#!/usr/bin/env bash'
        echo 'set -euo pipefail'
        declare -f die wait_for stop_mariadb
        declare -p mariadb_start mariadb_pidfile mariadb_ping pg_start pg_ctl_cmd
        cat <<'SCRIPT'
case "${1:-} ${2:-}" in
    "mariadb stop") stop_mariadb -KILL ;;
    "mariadb start")
        "${mariadb_start[@]}" </dev/null >/dev/null 2>&1 &
        wait_for 600 "${mariadb_ping[@]}" || die "MariaDB did not restart within 60 s" ;;
    "postgres stop") "${pg_ctl_cmd[@]}" >/dev/null ;;
    "postgres start") "${pg_start[@]}" >/dev/null ;;
    *) die "usage: $0 mariadb|postgres stop|start" ;;
esac
SCRIPT
    } >"$ctl"
    chmod 755 "$ctl"
    export DINGSYNC_TEST_SERVICE_CTL="$ctl"
}

stop_services() {
    [ -n "${mariadb_pidfile:-}" ] && stop_mariadb -TERM
    [ -n "${pg_ctl_cmd:-}" ] && "${pg_ctl_cmd[@]}" >/dev/null 2>&1
    [ -n "$services_dir" ] && rm -rf "$services_dir"
    return 0
}

start_services() {
    services_dir=$(mktemp -d /tmp/dingsync-services.XXXXXX)
    chmod 755 "$services_dir"
    trap stop_services EXIT
    make_certs
    start_mariadb
    start_postgres
    write_control_script
}
