# shellcheck shell=bash
# Shared functions for up.sh, down.sh and ctl.sh (local services without Docker).
# Source this file; it does not run anything by itself.
#
# Services, all bound to 127.0.0.1 only:
#   rabbitmq  RabbitMQ 3.10 (Debian package): AMQP 5672, management 15672,
#             epmd 4369, Erlang distribution 25672
#   dovecot   Dovecot 2.3 (Debian package), own config: IMAP 10143 (STARTTLS),
#             IMAPS 10993, POP3 10110 (STLS), POP3S 10995
#   ferretdb  MongoDB wire protocol on 27017: embedded FerretDB on SQLite built
#             from ./ferretdb, or `mongod` when one is on PATH, or nothing when
#             MAILINTAKE_MONGO_URL points elsewhere
# Everything they write lives in the state dir ($MAILINTAKE_LOCAL_DIR).

LOCAL_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STATE=${MAILINTAKE_LOCAL_DIR:-/var/tmp/mailintake-local}
case $STATE in
    /*) ;;
    *) STATE=$PWD/$STATE ;;
esac

BIND_ADDR=127.0.0.1
AMQP_PORT=5672
RABBITMQ_MGMT_PORT=15672
EPMD_PORT=4369
RABBITMQ_DIST_PORT=25672
IMAP_PORT=10143
IMAPS_PORT=10993
POP3_PORT=10110
POP3S_PORT=10995
OAUTH_PORT=10180  # the tests' OAuth2 server; Dovecot introspects bearer tokens there
MONGO_PORT=27017
LOCAL_MONGO_URL="mongodb://${BIND_ADDR}:${MONGO_PORT}/mailintake"

MAIL_SYSTEM_USER=mailintake-mail
NAMED_MAIL_USERS="demo alice bob"
SERVICES="rabbitmq dovecot ferretdb"

TLS_DIR=$STATE/tls
BIN_DIR=$STATE/bin
RMQ_DIR=$STATE/rabbitmq
RMQ_PID_FILE=$RMQ_DIR/rabbit.pid
DOVECOT_DIR=$STATE/dovecot
DOVECOT_CONF=$DOVECOT_DIR/dovecot.conf
DOVECOT_PID_FILE=$DOVECOT_DIR/run/master.pid
MAIL_DIR=$STATE/mail
FERRETDB_SRC=$LOCAL_DIR/ferretdb
FERRETDB_BIN=$BIN_DIR/ferretdb-local
FERRETDB_DATA=$STATE/ferretdb-data
FERRETDB_PID_FILE=$STATE/ferretdb.pid
FERRETDB_LOG=$STATE/ferretdb.log
MONGOD_DATA=$STATE/mongod-data
MONGOD_PID_FILE=$STATE/mongod.pid
MONGOD_LOG=$STATE/mongod.log

# A MAILINTAKE_MONGO_URL other than the local default means an external store.
MONGO_URL=${MAILINTAKE_MONGO_URL:-$LOCAL_MONGO_URL}

# Every Erlang process started from here (broker, epmd, CLI tools) reads these.
export RABBITMQ_CONF_ENV_FILE=$RMQ_DIR/rabbitmq-env.conf
export ERL_EPMD_ADDRESS=$BIND_ADDR

# ---------------------------------------------------------------- helpers

say() { printf '%s\n' "$*"; }
warn() { printf '%s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Seconds since $1 (an $EPOCHREALTIME value), one decimal.
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1fs", b - a }'; }

require_root() {
    [ "$(id -u)" = 0 ] || die "run as root"
}

# Serialise up/down/ctl runs against one state dir. Daemons are started with
# fd 9 closed so that they do not inherit the lock.
take_lock() {
    mkdir -p "$STATE"
    exec 9>"$STATE/.lock"
    flock -w 600 9 || die "another up/down/ctl run holds $STATE/.lock"
}

port_open() {
    timeout 2 bash -c "exec 3<>/dev/tcp/$BIND_ADDR/$1" 2>/dev/null
}

# wait_ports TIMEOUT_SECONDS PID_FILE PORT... : wait until all ports accept
# connections; fail early when the process in PID_FILE has gone away.
wait_ports() {
    local timeout=$1 pidfile=$2 port
    shift 2
    local deadline=$((SECONDS + timeout))
    for port in "$@"; do
        until port_open "$port"; do
            if [ -n "$pidfile" ] && ! pid_alive "$pidfile"; then
                return 1
            fi
            [ $SECONDS -lt $deadline ] || return 1
            sleep 0.1
        done
    done
}

read_pid() {
    local pid
    [ -r "$1" ] || return 1
    # (pid files may lack a final newline)
    read -r pid <"$1" 2>/dev/null || [ -n "${pid:-}" ] || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    printf '%s\n' "$pid"
}

pid_alive() {
    local pid
    pid=$(read_pid "$1") || return 1
    kill -0 "$pid" 2>/dev/null
}

# stop_pid PID_FILE NAME: SIGTERM, wait up to 30 s, then SIGKILL.
stop_pid() {
    local pidfile=$1 name=$2 pid i
    pid=$(read_pid "$pidfile") || { rm -f "$pidfile"; return 0; }
    if kill -TERM "$pid" 2>/dev/null; then
        for ((i = 0; i < 300; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            warn "$name: did not exit after SIGTERM, sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.2
        fi
    fi
    rm -f "$pidfile"
}

# write_file PATH MODE [OWNER]: write stdin to PATH atomically if it differs.
write_file() {
    local path=$1 mode=$2 owner=${3:-} tmp
    tmp=$(mktemp "$path.XXXXXX")
    cat >"$tmp"
    chmod "$mode" "$tmp"
    [ -z "$owner" ] || chown "$owner" "$tmp"
    if [ -f "$path" ] && cmp -s "$tmp" "$path"; then
        rm -f "$tmp"
    else
        mv -f "$tmp" "$path"
    fi
}

show_log_tail() {
    local f
    for f in "$@"; do
        [ -s "$f" ] || continue
        warn "--- last lines of $f"
        tail -n 25 "$f" >&2
    done
}

# ---------------------------------------------------------------- base set-up

ensure_packages() {
    local missing=() p policy=/usr/sbin/policy-rc.d added_policy=
    for p in rabbitmq-server dovecot-imapd dovecot-pop3d openssl patch; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    say "packages: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Keep the packages' own system services from starting on install.
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        added_policy=1
    fi
    if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; then
        [ -z "$added_policy" ] || rm -f "$policy"
        die "apt-get install ${missing[*]} failed"
    fi
    [ -z "$added_policy" ] || rm -f "$policy"
}

ensure_mail_system_user() {
    id -u "$MAIL_SYSTEM_USER" >/dev/null 2>&1 && return 0
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin "$MAIL_SYSTEM_USER"
}

# random_secret FILE: print the secret kept in FILE, creating it once.
random_secret() {
    local file=$1
    if [ ! -s "$file" ]; then
        (umask 077 && python3 -c 'import secrets; print(secrets.token_hex(12))' >"$file.tmp" && mv -f "$file.tmp" "$file")
    fi
    cat "$file"
}

ensure_secret_key() {
    local file=$STATE/secret.key
    [ -s "$file" ] && return 0
    (umask 077 && python3 -c 'import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())' \
        >"$file.tmp" && mv -f "$file.tmp" "$file")
}

# A test CA and a server certificate for localhost / 127.0.0.1 / ::1 signed by it.
ensure_tls() {
    mkdir -p "$TLS_DIR"
    chmod 755 "$TLS_DIR"
    if [ ! -s "$TLS_DIR/ca.pem" ] || [ ! -s "$TLS_DIR/ca.key" ]; then
        cat >"$TLS_DIR/ca.cnf" <<'EOF'
[req]
distinguished_name = dn
x509_extensions = v3_ca
prompt = no
[dn]
CN = mailintake local test CA
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
EOF
        (umask 077 && openssl req -x509 -new -newkey rsa:2048 -nodes -sha256 -days 3650 \
            -config "$TLS_DIR/ca.cnf" -keyout "$TLS_DIR/ca.key" -out "$TLS_DIR/ca.pem" 2>/dev/null)
        chmod 644 "$TLS_DIR/ca.pem"
        rm -f "$TLS_DIR/server.pem"
    fi
    if [ ! -s "$TLS_DIR/server.pem" ] || [ ! -s "$TLS_DIR/server.key" ] ||
        ! openssl x509 -checkend $((30 * 86400)) -noout -in "$TLS_DIR/server.pem" >/dev/null 2>&1; then
        cat >"$TLS_DIR/server.ext" <<'EOF'
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1, IP:::1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
EOF
        (umask 077 && openssl req -new -newkey rsa:2048 -nodes -sha256 -subj /CN=localhost \
            -keyout "$TLS_DIR/server.key" -out "$TLS_DIR/server.csr" 2>/dev/null &&
            openssl x509 -req -sha256 -days 825 -in "$TLS_DIR/server.csr" \
                -CA "$TLS_DIR/ca.pem" -CAkey "$TLS_DIR/ca.key" -set_serial "0x$(openssl rand -hex 16)" \
                -extfile "$TLS_DIR/server.ext" -out "$TLS_DIR/server.pem" 2>/dev/null)
        chmod 644 "$TLS_DIR/server.pem"
        rm -f "$TLS_DIR/server.csr"
    fi
}

# Everything all services need before any of them starts.
ensure_base() {
    require_root
    mkdir -p "$STATE" "$BIN_DIR" "$DOVECOT_DIR"
    chmod 755 "$STATE" "$DOVECOT_DIR"
    ensure_secret_key
    ensure_tls
}

# A URL with any user:password replaced by ***.
redact_url() { printf '%s\n' "$1" | sed -E 's#//[^/@]*@#//***@#'; }

# Quote a value for a POSIX shell.
shell_quote() { printf "'%s'" "${1//\'/\'\\\'\'}"; }

write_env_file() {
    local line name value
    {
        say "# Local service endpoints for mailintake; generated by deploy/local/up.sh."
        say "# Use: . $STATE/env.sh"
        while IFS= read -r line; do
            [ -n "$line" ] || continue
            name=${line%%=*}
            value=${line#*=}
            printf 'export %s=%s\n' "$name" "$(shell_quote "$value")"
        done <<EOF
MAILINTAKE_LOCAL_DIR=$STATE
MAILINTAKE_AMQP_URL=amqp://guest:guest@$BIND_ADDR:$AMQP_PORT/
MAILINTAKE_RABBITMQ_MANAGEMENT_URL=http://guest:guest@$BIND_ADDR:$RABBITMQ_MGMT_PORT/
MAILINTAKE_MONGO_URL=$MONGO_URL
MAILINTAKE_SECRET_KEY=$(cat "$STATE/secret.key")
MAILINTAKE_TEST_CA=$TLS_DIR/ca.pem
MAILINTAKE_TEST_IMAP_HOST=$BIND_ADDR
MAILINTAKE_TEST_IMAP_PORT=$IMAP_PORT
MAILINTAKE_TEST_IMAPS_PORT=$IMAPS_PORT
MAILINTAKE_TEST_POP3_PORT=$POP3_PORT
MAILINTAKE_TEST_POP3S_PORT=$POP3S_PORT
MAILINTAKE_TEST_OAUTH_PORT=$OAUTH_PORT
MAILINTAKE_TEST_MAIL_PASSWORD=$(random_secret "$DOVECOT_DIR/any-user.password")
MAILINTAKE_TEST_MAIL_USERS=$NAMED_MAIL_USERS
MAILINTAKE_TEST_MAIL_USERS_PASSWORD=$(random_secret "$DOVECOT_DIR/named-users.password")
$(rabbitmq_user_urls)
EOF
    } | write_file "$STATE/env.sh" 600
}

# ---------------------------------------------------------------- rabbitmq

# Run a RabbitMQ tool through the Debian wrapper, which re-runs it as the rabbitmq user.
rmq() {
    local tool=$1
    shift
    "/usr/sbin/$tool" "$@"
}

rabbitmq_configure() {
    # quorum_queue.compute_checksums = false: RabbitMQ's own advice where messages are large
    # and CPU is short (raw mail travels as the message body): a tenth less of its CPU per
    # mail here. The CRC32 is not the only corruption check quorum queues have (RabbitMQ
    # 3.10.6 release notes); a production broker keeps its default.
    mkdir -p "$RMQ_DIR/mnesia" "$RMQ_DIR/log"
    write_file "$RMQ_DIR/rabbitmq.conf" 644 <<EOF
# generated by deploy/local/lib.sh
listeners.tcp.default = $BIND_ADDR:$AMQP_PORT
management.tcp.ip = $BIND_ADDR
management.tcp.port = $RABBITMQ_MGMT_PORT
loopback_users.guest = true
log.file.level = info
log.console = false
quorum_queue.compute_checksums = false
EOF
    # Read by the rabbitmq-server and rabbitmqctl scripts (as a shell file)
    # through RABBITMQ_CONF_ENV_FILE.
    write_file "$RABBITMQ_CONF_ENV_FILE" 644 <<EOF
# generated by deploy/local/lib.sh
NODENAME=rabbit@localhost
CONFIG_FILE=$RMQ_DIR/rabbitmq.conf
ENABLED_PLUGINS_FILE=$RMQ_DIR/enabled_plugins
MNESIA_BASE=$RMQ_DIR/mnesia
LOG_BASE=$RMQ_DIR/log
PID_FILE=$RMQ_PID_FILE
DIST_PORT=$RABBITMQ_DIST_PORT
SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
export ERL_EPMD_ADDRESS=$BIND_ADDR
EOF
    if ! grep -qs rabbitmq_management "$RMQ_DIR/enabled_plugins"; then
        rmq rabbitmq-plugins enable --offline rabbitmq_management >/dev/null
    fi
    chown -R rabbitmq:rabbitmq "$RMQ_DIR"
}

rabbitmq_is_up() {
    pid_alive "$RMQ_PID_FILE" && port_open "$AMQP_PORT" && port_open "$RABBITMQ_MGMT_PORT"
}

rabbitmq_status() {
    if rabbitmq_is_up; then
        say "rabbitmq: running (pid $(read_pid "$RMQ_PID_FILE"), amqp $BIND_ADDR:$AMQP_PORT, management $BIND_ADDR:$RABBITMQ_MGMT_PORT)"
    elif pid_alive "$RMQ_PID_FILE"; then
        say "rabbitmq: starting or unhealthy (pid $(read_pid "$RMQ_PID_FILE"))"
        return 1
    else
        say "rabbitmq: stopped"
        return 3
    fi
}

rabbitmq_start() {
    rabbitmq_configure
    if ! pid_alive "$RMQ_PID_FILE"; then
        rm -f "$RMQ_PID_FILE"
        rmq rabbitmq-server -detached </dev/null >"$RMQ_DIR/log/startup.log" 2>&1 9>&- || {
            show_log_tail "$RMQ_DIR/log/startup.log"
            die "rabbitmq: rabbitmq-server -detached failed"
        }
    fi
    # await_startup gives up at once while the node is not yet known to epmd.
    # The node writes its pid file a moment after `-detached` has returned.
    local deadline=$((SECONDS + 60))
    until epmd -names 2>/dev/null | grep -q '^name rabbit at port'; do
        if { [ -e "$RMQ_PID_FILE" ] && ! pid_alive "$RMQ_PID_FILE"; } || [ $SECONDS -ge $deadline ]; then
            show_log_tail "$RMQ_DIR/log/startup.log" "$RMQ_DIR/log/rabbit@localhost.log"
            die "rabbitmq: node did not register with epmd"
        fi
        sleep 0.1
    done
    if ! rmq rabbitmqctl -q await_startup --timeout 90 </dev/null >"$RMQ_DIR/log/await.log" 2>&1 ||
        ! wait_ports 30 "$RMQ_PID_FILE" "$AMQP_PORT" "$RABBITMQ_MGMT_PORT"; then
        show_log_tail "$RMQ_DIR/log/await.log" "$RMQ_DIR/log/startup.log" "$RMQ_DIR/log/rabbit@localhost.log"
        die "rabbitmq: did not start"
    fi
}

rabbitmq_stop() {
    if pid_alive "$RMQ_PID_FILE"; then
        # With the pid file, `rabbitmqctl stop` returns only once the node has exited.
        rmq rabbitmqctl -q stop "$RMQ_PID_FILE" </dev/null >/dev/null 2>&1 || true
        stop_pid "$RMQ_PID_FILE" rabbitmq
    fi
    rm -f "$RMQ_PID_FILE"
    epmd_stop
}

# One RabbitMQ user per stage, the operator and the monitor, with the rules of
# shared/brokeraccess.py (read with the system Python: that module needs nothing else).
# Passwords are generated once into $RMQ_DIR/users/<role>.password. Idempotent.
BROKER_ROLES="fetcher binder assigner notifier operator monitor"

rabbitmq_users() {
    local name tags configure write read role existing
    mkdir -p "$RMQ_DIR/users"
    chmod 700 "$RMQ_DIR/users"
    existing=$(rmq rabbitmqctl -q list_users </dev/null | cut -f1)
    while IFS=$'\t' read -r name tags configure write read; do
        role=${name#mailintake-}
        if printf '%s\n' "$existing" | grep -qx -- "$name"; then
            random_secret "$RMQ_DIR/users/$role.password" |
                rmq rabbitmqctl -q change_password "$name" >/dev/null
        else
            random_secret "$RMQ_DIR/users/$role.password" |
                rmq rabbitmqctl -q add_user "$name" >/dev/null
        fi
        [ "$tags" = - ] && tags=
        # shellcheck disable=SC2086  # no tags or one tag
        rmq rabbitmqctl -q set_user_tags "$name" $tags </dev/null >/dev/null
        rmq rabbitmqctl -q set_permissions -p / "$name" "$configure" "$write" "$read" </dev/null >/dev/null
    done < <(broker_rules rules)
    rabbitmq_topic_rules "${MAILINTAKE_NAMESPACE:-mailintake}"
}

# broker_rules rules | topic-rules NAMESPACE: shared/brokeraccess.py's rules (one user a line)
# or topic rules (one user and exchange a line), tab-separated.
broker_rules() {
    (cd "$LOCAL_DIR/../.." && PYTHONPATH=. python3 -m shared.brokeraccess "$@")
}

# rabbitmq_topic_rules NAMESPACE [clear]: grant (or take back) the topic rules of every user
# on NAMESPACE's events and failures exchanges. RabbitMQ keys topic rules by exchange name:
# each namespace (a test's too) needs its own. Idempotent.
rabbitmq_topic_rules() {
    local ns=$1 action=${2:-set} name exchange topic_write topic_read
    while IFS=$'\t' read -r name exchange topic_write topic_read; do
        if [ "$action" = clear ]; then
            rmq rabbitmqctl -q clear_topic_permissions -p / "$name" "$exchange" </dev/null >/dev/null
        else
            rmq rabbitmqctl -q set_topic_permissions -p / "$name" "$exchange" "$topic_write" "$topic_read" </dev/null >/dev/null
        fi
    done < <(broker_rules topic-rules "$ns")
}

# The per-user URL lines of env.sh: MAILINTAKE_LOCAL_AMQP_URL_<ROLE>=amqp://...
rabbitmq_user_urls() {
    local role upper
    for role in $BROKER_ROLES; do
        [ "$role" != monitor ] || continue # the management API only: no AMQP URL
        [ -s "$RMQ_DIR/users/$role.password" ] || continue
        upper=$(printf '%s' "$role" | tr '[:lower:]' '[:upper:]')
        printf 'MAILINTAKE_LOCAL_AMQP_URL_%s=amqp://mailintake-%s:%s@%s:%s/\n' \
            "$upper" "$role" "$(cat "$RMQ_DIR/users/$role.password")" "$BIND_ADDR" "$AMQP_PORT"
    done
}

# epmd outlives the node; stop it unless other Erlang nodes still use it.
epmd_stop() {
    local names
    port_open "$EPMD_PORT" || return 0
    names=$(epmd -names 2>/dev/null | grep '^name ' || true)
    if [ -z "$names" ]; then
        epmd -kill >/dev/null 2>&1 || true
    fi
}

# ---------------------------------------------------------------- dovecot

dovecot_configure() {
    local uid gid dh_line=""
    ensure_mail_system_user
    uid=$(id -u "$MAIL_SYSTEM_USER")
    gid=$(id -g "$MAIL_SYSTEM_USER")
    mkdir -p "$DOVECOT_DIR" "$MAIL_DIR"
    chmod 755 "$DOVECOT_DIR"
    chown "$MAIL_SYSTEM_USER:$MAIL_SYSTEM_USER" "$MAIL_DIR"
    chmod 750 "$MAIL_DIR"
    [ -s /usr/share/dovecot/dh.pem ] && dh_line="ssl_dh = </usr/share/dovecot/dh.pem"

    local named_pw any_pw user
    named_pw=$(random_secret "$DOVECOT_DIR/named-users.password")
    any_pw=$(random_secret "$DOVECOT_DIR/any-user.password")
    for user in $NAMED_MAIL_USERS; do
        printf '%s:{PLAIN}%s::::::\n' "$user" "$named_pw"
    done | write_file "$DOVECOT_DIR/users" 640 root:dovecot

    # No tokeninfo URL: every login introspects its token (nothing is taken from a cache).
    write_file "$DOVECOT_DIR/oauth2.conf.ext" 644 <<EOF
introspection_mode = post
introspection_url = http://$BIND_ADDR:$OAUTH_PORT/introspect
force_introspection = yes
username_attribute = username
active_attribute = active
active_value = true
timeout_msecs = 5000
EOF

    write_file "$DOVECOT_CONF" 600 <<EOF
# generated by deploy/local/lib.sh; started with: dovecot -c $DOVECOT_CONF
instance_name = mailintake-local
base_dir = $DOVECOT_DIR/run
state_dir = $DOVECOT_DIR/state
protocols = imap pop3
listen = $BIND_ADDR
log_path = $DOVECOT_DIR/dovecot.log
info_log_path = $DOVECOT_DIR/dovecot.log
verbose_proctitle = yes

ssl = yes
ssl_cert = <$TLS_DIR/server.pem
ssl_key = <$TLS_DIR/server.key
$dh_line
ssl_min_protocol = TLSv1.2

# Tests log in with plaintext on loopback too.
disable_plaintext_auth = no
auth_mechanisms = plain login xoauth2 oauthbearer
auth_failure_delay = 0
auth_verbose = yes
# No auth cache: a revoked bearer token must be refused at the next login.
auth_cache_size = 0

# 0. XOAUTH2 / OAUTHBEARER only: the bearer token is checked by the tests' OAuth2
#    server (token introspection on 127.0.0.1:$OAUTH_PORT, running only during
#    those tests); password logins never reach this passdb.
passdb {
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = $DOVECOT_DIR/oauth2.conf.ext
}

# 1. the named users, with their own password;
# 2. a named user with any other password is rejected (not passed on to 3.);
# 3. any other user name logs in with the shared test password, so every test
#    gets a fresh mailbox by choosing a new user name.
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $DOVECOT_DIR/users
}
passdb {
  driver = passwd-file
  args = username_format=%u $DOVECOT_DIR/users
  deny = yes
}
passdb {
  driver = static
  args = password=$any_pw
}
userdb {
  driver = static
  args = uid=$uid gid=$gid home=$MAIL_DIR/%u
}
mail_location = maildir:$MAIL_DIR/%u
first_valid_uid = $uid
first_valid_gid = $gid

default_process_limit = 1000
default_client_limit = 4000
default_vsz_limit = 512M

service imap-login {
  inet_listener imap {
    port = $IMAP_PORT
  }
  inet_listener imaps {
    port = $IMAPS_PORT
    ssl = yes
  }
  service_count = 0
  process_min_avail = 2
}
service pop3-login {
  inet_listener pop3 {
    port = $POP3_PORT
  }
  inet_listener pop3s {
    port = $POP3S_PORT
    ssl = yes
  }
  service_count = 0
  process_min_avail = 1
}
# No growing delay (up to 15 s) after failed logins from one IP: tests fail
# logins on purpose.
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
# Thousands of idle IMAP connections (bench/bench_mailboxes.py holds 5,000): up to 100
# per imap process at once, 1,000 in its life, instead of a process for each connection
# (an imap process may serve several users: every mail user has the same uid here), so
# the processes stay under default_process_limit and their inotify instances under the
# kernel's per-user limit (see dovecot_raise_inotify_limit). Past that limit Dovecot logs
# "Inotify instance limit ... exceeded" and notices new mail in IDLE only at
# mailbox_idle_check_interval (30 s by default; 5 s here, as a fallback).
service imap {
  client_limit = 100
  service_count = 1000
}
mailbox_idle_check_interval = 5 secs
protocol imap {
  mail_max_userip_connections = 1000
  imap_idle_notify_interval = 30 secs
}
protocol pop3 {
  mail_max_userip_connections = 1000
}
EOF
}

dovecot_is_up() {
    pid_alive "$DOVECOT_PID_FILE" && port_open "$IMAP_PORT" && port_open "$IMAPS_PORT" &&
        port_open "$POP3_PORT" && port_open "$POP3S_PORT"
}

dovecot_status() {
    if dovecot_is_up; then
        say "dovecot: running (pid $(read_pid "$DOVECOT_PID_FILE"), imap $IMAP_PORT imaps $IMAPS_PORT pop3 $POP3_PORT pop3s $POP3S_PORT on $BIND_ADDR)"
    elif pid_alive "$DOVECOT_PID_FILE"; then
        say "dovecot: starting or unhealthy (pid $(read_pid "$DOVECOT_PID_FILE"))"
        return 1
    else
        say "dovecot: stopped"
        return 3
    fi
}

# Dovecot's IDLE watches maildirs with inotify: an instance per imap process, 128 per user
# by default. Raised to 1,024 where the kernel lets us (root, not in a read-only /proc/sys);
# elsewhere Dovecot falls back to mailbox_idle_check_interval.
dovecot_raise_inotify_limit() {
    local limit=/proc/sys/fs/inotify/max_user_instances
    if [ -r "$limit" ] && [ "$(cat "$limit")" -lt 1024 ]; then
        { echo 1024 >"$limit"; } 2>/dev/null ||
            say "dovecot: fs.inotify.max_user_instances stays $(cat "$limit") (not writable)"
    fi
}

dovecot_start() {
    dovecot_configure
    dovecot_raise_inotify_limit
    if ! pid_alive "$DOVECOT_PID_FILE"; then
        dovecot -c "$DOVECOT_CONF" </dev/null >>"$DOVECOT_DIR/dovecot.log" 2>&1 9>&- || {
            show_log_tail "$DOVECOT_DIR/dovecot.log"
            die "dovecot: failed to start"
        }
    fi
    wait_ports 20 "$DOVECOT_PID_FILE" "$IMAP_PORT" "$IMAPS_PORT" "$POP3_PORT" "$POP3S_PORT" || {
        show_log_tail "$DOVECOT_DIR/dovecot.log"
        die "dovecot: did not start"
    }
}

dovecot_stop() {
    stop_pid "$DOVECOT_PID_FILE" dovecot
}

# ---------------------------------------------------------------- ferretdb / mongod

# external: MAILINTAKE_MONGO_URL names another server; mongod: one is on PATH;
# ferretdb: the embedded FerretDB built from ./ferretdb.
store_backend() {
    if [ "$MONGO_URL" != "$LOCAL_MONGO_URL" ]; then
        echo external
    elif command -v mongod >/dev/null 2>&1; then
        echo mongod
    else
        echo ferretdb
    fi
}

store_pid_file() {
    case $(store_backend) in
        mongod) echo "$MONGOD_PID_FILE" ;;
        *) echo "$FERRETDB_PID_FILE" ;;
    esac
}

find_go() {
    if command -v go >/dev/null 2>&1; then
        command -v go
    elif [ -x /usr/local/go/bin/go ]; then
        echo /usr/local/go/bin/go
    else
        return 1
    fi
}

# Build the FerretDB binary when it is missing or older than its sources.
#
# The module is built with the patches in $FERRETDB_SRC/*.patch applied to a copy of its
# source, and its SQLite driver with those in $FERRETDB_SRC/modernc-sqlite/ (README: each
# only changes how fast a command runs). Before the binary is put in place, FerretDB's and
# the driver's own Go tests of the packages the patches change must pass on the patched
# copies (ferretdb_test_patches: 1.5–2 minutes on 2 cores, nearly 4 when Go's build cache is
# empty; log in $STATE/ferretdb-build/gotest.log).
# MAILINTAKE_FERRETDB_SKIP_GO_TESTS=1 skips them, for quick local rebuilds only (CI never
# sets it); a binary built so is built again, and tested, by the next start without it.
# A binary built with another set of patches is stale too (a patch removed leaves no newer
# file behind): each build records its set in $FERRETDB_BIN.patches. A binary built before
# that record was kept is judged by the times alone (remove it to rebuild).
ferretdb_build() {
    local f stale='' go build=$STATE/ferretdb-build
    [ -x "$FERRETDB_BIN" ] || stale=1
    for f in "$FERRETDB_SRC"/main.go "$FERRETDB_SRC"/go.mod "$FERRETDB_SRC"/go.sum "$FERRETDB_SRC"/*.patch \
        "$FERRETDB_SRC"/modernc-sqlite/*.patch; do
        [ "$f" -nt "$FERRETDB_BIN" ] && stale=1
    done
    if [ -f "$FERRETDB_BIN.patches" ]; then
        [ "$(ferretdb_patch_set)" = "$(grep -v '^untested' "$FERRETDB_BIN.patches")" ] || stale=1
        if grep -q '^untested' "$FERRETDB_BIN.patches" && [ "${MAILINTAKE_FERRETDB_SKIP_GO_TESTS:-}" != 1 ]; then
            stale=1
        fi
    fi
    [ -n "$stale" ] || return 0
    go=$(find_go) || die "ferretdb: Go (>= 1.24) is needed to build $FERRETDB_SRC (or put mongod on PATH)"
    mkdir -p "$BIN_DIR"
    say "ferretdb: building $FERRETDB_BIN"
    rm -rf "$build" && mkdir -p "$build"
    cp "$FERRETDB_SRC"/main.go "$FERRETDB_SRC"/go.mod "$FERRETDB_SRC"/go.sum "$build"/
    ferretdb_patched_module "$go" "$build" github.com/FerretDB/FerretDB FerretDB "$FERRETDB_SRC"
    ferretdb_patched_module "$go" "$build" modernc.org/sqlite sqlite "$FERRETDB_SRC/modernc-sqlite"
    (cd "$build" && "$go" mod edit -replace github.com/FerretDB/FerretDB=./FerretDB \
        -replace modernc.org/sqlite=./sqlite &&
        "$go" build -buildvcs=false -o "$FERRETDB_BIN.tmp" .) ||
        die "ferretdb: go build failed"
    if [ "${MAILINTAKE_FERRETDB_SKIP_GO_TESTS:-}" = 1 ]; then
        warn "ferretdb: Go tests of the patched packages skipped (MAILINTAKE_FERRETDB_SKIP_GO_TESTS=1)"
    else
        ferretdb_test_patches "$go" "$build"
    fi
    mv -f "$FERRETDB_BIN.tmp" "$FERRETDB_BIN"
    {
        ferretdb_patch_set
        [ "${MAILINTAKE_FERRETDB_SKIP_GO_TESTS:-}" != 1 ] || echo "untested (MAILINTAKE_FERRETDB_SKIP_GO_TESTS=1)"
    } >"$FERRETDB_BIN.patches"
}

# Run the Go tests of the packages the patches change, in the patched copies in $2 (see
# ferretdb_build); unit tests, none needs a server. FerretDB's run on the patched driver
# (its copy's go.mod replaces it), with what they expect of a checkout: a .git at the root
# (testutil finds the root by it) and build/version/version.txt (a test binary of FerretDB
# itself panics without a `v…` version). All of FerretDB's tests of those packages run
# (30–50 s on 2 cores, nearly all sjson's: they compare its fast codec with the old one on
# 12,000 random and 200,000 mutated documents). The driver's run without three that spend
# 7 minutes in loops of fixed length (20–45 s instead of 7.5 min): TestIssue51 (-short: a
# minute of opening and closing a database) and the two "context expiring" subtests of
# TestRegisteredFunctions (each 1,000 rounds of 200 ms, a context cancelled in the middle).
# A kept statement run again after its context was cancelled stays tested (TestCancelRace);
# one interrupted in the middle of a step, then run again, only those loops may hit:
# `go test -short .` in $STATE/ferretdb-build/sqlite runs them too.
ferretdb_test_patches() {
    local go=$1 build=$2 log=$2/gotest.log t0=$EPOCHREALTIME version ferretdb_pkgs sqlite_pkgs
    version=$(cd "$build" && "$go" list -m -f '{{.Version}}' github.com/FerretDB/FerretDB) ||
        die "ferretdb: go list -m github.com/FerretDB/FerretDB failed"
    mkdir -p "$build/FerretDB/.git"
    echo "$version" >"$build/FerretDB/build/version/version.txt"
    # The pool is the package that opens the driver's connections (its tests use the driver).
    ferretdb_pkgs="$(ferretdb_patched_packages "$FERRETDB_SRC") ./internal/backends/sqlite/metadata/pool"
    sqlite_pkgs=$(ferretdb_patched_packages "$FERRETDB_SRC/modernc-sqlite")
    # shellcheck disable=SC2086 # the package lists are split on purpose
    if ! (
        failed=0
        cd "$build/FerretDB" && "$go" mod edit -replace modernc.org/sqlite=../sqlite || exit
        echo "== FerretDB $version:" $ferretdb_pkgs
        "$go" test -buildvcs=false -count=1 -timeout 15m $ferretdb_pkgs || failed=1
        cd "$build/sqlite" || exit
        echo "== modernc.org/sqlite:" $sqlite_pkgs
        "$go" test -buildvcs=false -count=1 -timeout 15m -short \
            -skip '^TestRegisteredFunctions$/^(Query|Exec)Context_with_context_expiring$' $sqlite_pkgs || failed=1
        exit "$failed"
    ) >"$log" 2>&1; then
        ferretdb_test_excerpt "$log" >&2 || true
        rm -f "$FERRETDB_BIN.tmp"
        die "ferretdb: Go tests of the patched packages failed after $(since "$t0"): $(ferretdb_test_failures "$log") (full log: $log)"
    fi
    say "ferretdb: Go tests of the patched packages passed ($(since "$t0"), log: $log)"
}

# The packages (./dir) whose Go files the patches in $1 change.
ferretdb_patched_packages() {
    awk '$1 == "+++" && $2 ~ /^b\/.*\.go$/ {
        f = substr($2, 3); sub(/\/?[^\/]*$/, "", f); print (f == "" ? "." : "./" f)
    }' "$1"/*.patch | sort -u | xargs
}

# What failed in go test's output $1, without the tests' own logs: each failed test and
# package, the place and message of each failure (testify's first lines), panics and
# compile errors. Cut short: a test's output may hold any bytes, and long lines.
ferretdb_test_excerpt() {
    LC_ALL=C awk '/^[ \t]*--- FAIL|^FAIL[ \t]|^panic:|^# |^[^ \t].*\.go:[0-9]+:[0-9]+: |_test\.go:[0-9]+:/ {
            m = 0; print; next
        }
        /^[ \t]+(Error|Messages):/ { m = 2; print; next }
        /^[ \t]+Test:/ { m = 0 }
        m > 0 && m-- { print }' "$1" | LC_ALL=C cut -c 1-200 | head -n 60
}

# The packages that failed in go test's output $1, each with its failed tests ("see the
# log" when none did: a command before the tests failed).
ferretdb_test_failures() {
    awk '/^--- FAIL: / { t = t (t == "" ? "" : ", ") $3 }
        /^ok[ \t]/ { t = "" }
        /^FAIL[ \t]/ { printf "%s%s%s", (n++ ? "; " : ""), $2, (t == "" ? "" : " (" t ")"); t = "" }
        END { if (!n) printf "see the log" }' "$1"
}

# The patches a build applies: the checksum, size and name of each.
ferretdb_patch_set() {
    (cd "$FERRETDB_SRC" && cksum ./*.patch modernc-sqlite/*.patch)
}

# Copy module $3, at the version the build in $2 requires (go.sum pins it), to $2/$4 and
# apply the patches $5/*.patch to it. Before the build's go.mod replaces the module.
ferretdb_patched_module() {
    local go=$1 build=$2 path=$3 dir=$4 patches=$5 module f
    module=$(cd "$build" && "$go" mod download -json "$path" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])') ||
        die "ferretdb: go mod download $path failed"
    cp -r "$module" "$build/$dir" && chmod -R u+w "$build/$dir"
    for f in "$patches"/*.patch; do
        patch --quiet -d "$build/$dir" -p1 <"$f" || die "ferretdb: $f does not apply"
    done
}

# Ask the server for `ping` (pymongo when importable, else a raw OP_MSG).
mongo_ping() {
    python3 - "$BIND_ADDR" "$MONGO_PORT" <<'EOF'
import socket, struct, sys

host, port = sys.argv[1], int(sys.argv[2])
try:
    import pymongo
except ImportError:
    pymongo = None
if pymongo is not None:
    client = pymongo.MongoClient(host, port, directConnection=True, serverSelectionTimeoutMS=10000)
    client.admin.command("ping")
    sys.exit(0)

def cstring(s):
    return s.encode() + b"\0"

body = b"\x10" + cstring("ping") + struct.pack("<i", 1) + b"\x02" + cstring("$db") + struct.pack("<i", 6) + cstring("admin")
doc = struct.pack("<i", len(body) + 5) + body + b"\0"
msg = struct.pack("<I", 0) + b"\0" + doc
with socket.create_connection((host, port), timeout=10) as s:
    s.sendall(struct.pack("<iiii", 16 + len(msg), 1, 0, 2013) + msg)
    data = b""
    while len(data) < 4 or len(data) < struct.unpack("<i", data[:4])[0]:
        chunk = s.recv(65536)
        if not chunk:
            sys.exit("connection closed")
        data += chunk
ok = struct.unpack("<i", data[12:16])[0] == 2013 and b"\x01ok\x00" + struct.pack("<d", 1.0) in data
sys.exit(0 if ok else "ping failed")
EOF
}

ferretdb_is_up() {
    [ "$(store_backend)" = external ] && return 0
    pid_alive "$(store_pid_file)" && port_open "$MONGO_PORT"
}

ferretdb_status() {
    local backend pidfile
    backend=$(store_backend)
    if [ "$backend" = external ]; then
        say "ferretdb: not managed (MAILINTAKE_MONGO_URL=$(redact_url "$MONGO_URL"))"
        return 0
    fi
    pidfile=$(store_pid_file)
    if ferretdb_is_up; then
        say "ferretdb: running ($backend, pid $(read_pid "$pidfile"), $BIND_ADDR:$MONGO_PORT)"
    elif pid_alive "$pidfile"; then
        say "ferretdb: starting or unhealthy ($backend, pid $(read_pid "$pidfile"))"
        return 1
    else
        say "ferretdb: stopped ($backend)"
        return 3
    fi
}

ferretdb_start() {
    local backend log pidfile
    backend=$(store_backend)
    [ "$backend" = external ] && return 0
    pidfile=$(store_pid_file)
    if ! pid_alive "$pidfile"; then
        rm -f "$pidfile"
        if port_open "$MONGO_PORT"; then
            die "ferretdb: $BIND_ADDR:$MONGO_PORT is already taken by another process"
        fi
        if [ "$backend" = mongod ]; then
            log=$MONGOD_LOG
            mkdir -p "$MONGOD_DATA"
            mongod --bind_ip "$BIND_ADDR" --port "$MONGO_PORT" --dbpath "$MONGOD_DATA" \
                --logpath "$MONGOD_LOG" --logappend --pidfilepath "$MONGOD_PID_FILE" --fork \
                </dev/null >/dev/null 2>&1 9>&- || { show_log_tail "$MONGOD_LOG"; die "ferretdb: mongod failed to start"; }
        else
            log=$FERRETDB_LOG
            ferretdb_build
            mkdir -p "$FERRETDB_DATA"
            # The binary writes the pid file once it listens; record the pid now
            # as well so that a failed start can be detected.
            # MAILINTAKE_FERRETDB_DEBUG_ADDR=127.0.0.1:8088 serves Go's pprof for profiling;
            # MAILINTAKE_FERRETDB_SYNCHRONOUS=FULL syncs the log at every commit (see main.go);
            # MAILINTAKE_FERRETDB_PRAGMAS="temp_store(memory),…" adds SQLite pragmas.
            # GOGC=400: the store's Go heap is small, and collecting it less often saves CPU.
            # shellcheck disable=SC2094 # the binary appends to the same log
            GOGC="${MAILINTAKE_FERRETDB_GOGC:-400}" setsid "$FERRETDB_BIN" -listen-addr "$BIND_ADDR:$MONGO_PORT" -data-dir "$FERRETDB_DATA" \
                -log-file "$FERRETDB_LOG" -pid-file "$FERRETDB_PID_FILE" \
                -debug-addr "${MAILINTAKE_FERRETDB_DEBUG_ADDR:-}" \
                -synchronous "${MAILINTAKE_FERRETDB_SYNCHRONOUS:-NORMAL}" \
                -sqlite-pragmas "${MAILINTAKE_FERRETDB_PRAGMAS:-}" \
                </dev/null >>"$FERRETDB_LOG" 2>&1 9>&- &
            echo $! >"$FERRETDB_PID_FILE"
        fi
    fi
    if ! wait_ports 30 "$pidfile" "$MONGO_PORT" || ! mongo_ping >/dev/null 2>"$STATE/mongo-ping.err"; then
        show_log_tail "${log:-$FERRETDB_LOG}" "$STATE/mongo-ping.err"
        die "ferretdb: did not start"
    fi
    rm -f "$STATE/mongo-ping.err"
}

ferretdb_stop() {
    [ "$(store_backend)" = external ] && return 0
    stop_pid "$(store_pid_file)" ferretdb
}

# ---------------------------------------------------------------- per-service verbs

check_service() {
    case " $SERVICES " in
        *" $1 "*) ;;
        *) die "unknown service '$1' (one of: $SERVICES)" ;;
    esac
}

service_up() {
    local svc=$1 t0=$EPOCHREALTIME
    if [ "$svc" = ferretdb ] && [ "$(store_backend)" = external ]; then
        say "ferretdb: not managed, using MAILINTAKE_MONGO_URL=$(redact_url "$MONGO_URL")"
        return 0
    fi
    if "${svc}_is_up"; then
        say "$svc: already up ($(since "$t0"))"
        return 0
    fi
    "${svc}_start"
    say "$svc: up ($(since "$t0"))"
}

service_down() {
    local svc=$1 t0=$EPOCHREALTIME
    "${svc}_stop"
    say "$svc: stopped ($(since "$t0"))"
}
