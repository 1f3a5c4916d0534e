#!/bin/sh
# The bootstrap superuser (POSTGRES_USER, `postgres`) logs in over the pod's local Unix socket
# only (bootstrap, `kubectl exec` maintenance), never over TCP: not from other pods, not even
# from the pod's own loopback. It writes, at the top of "$PGDATA/pg_hba.conf",
#
#   host all <superuser> all reject
#   host replication <superuser> all reject
#
# pg_hba.conf is first-match, so these come before every other host line: the image's
# `host all all all scram-sha-256` (pg_setup_hba_conf appends it before the init scripts run)
# and initdb's loopback lines. A `host` line matches every TCP connection (SSL or not, GSS
# encrypted or not); `all` as database does not match replication connections, hence the
# second line. `local` lines are left alone.
#
# The postgres image's entrypoint runs this once, on an empty volume, after app-role.sql (its
# glob is sorted; the order does not matter: the temporary init server listens on the socket
# only and reads pg_hba.conf again when the real server starts). The ConfigMap's files are not
# executable, so the entrypoint sources this file into its bash (set -Eeo pipefail): no `exit`,
# names prefixed. On a volume initialised before, run it by hand (it then reloads the server):
#
#   kubectl exec platform-warehouse-0 -c postgres -- sh /docker-entrypoint-initdb.d/superuser-local-only.sh
#
# Running it again changes nothing. It writes into $PGDATA only (the data volume; the root
# filesystem is read-only) and replaces pg_hba.conf in one rename.

platform_superuser_local_only() {
    if [ -z "${POSTGRES_USER:-}" ]; then
        echo "superuser-local-only.sh: POSTGRES_USER is not set: it names the superuser to keep off TCP" >&2
        return 1
    fi
    # An unquoted pg_hba user field: a plain name only (no quotes, commas, +, @ or spaces).
    case "$POSTGRES_USER" in
        *[!A-Za-z0-9_]* | [0-9]*)
            echo "superuser-local-only.sh: POSTGRES_USER '$POSTGRES_USER' is not a plain role name ([A-Za-z_][A-Za-z0-9_]*)" >&2
            return 1 ;;
    esac
    if [ -z "${PGDATA:-}" ]; then
        echo "superuser-local-only.sh: PGDATA is not set: it names the data directory" >&2
        return 1
    fi
    local hba="$PGDATA/pg_hba.conf"
    if [ ! -f "$hba" ] || [ ! -r "$hba" ] || [ ! -w "$hba" ]; then
        echo "superuser-local-only.sh: $hba is missing, or not readable and writable" >&2
        return 1
    fi
    local marker="# superuser-local-only.sh: $POSTGRES_USER logs in over the local socket only (first match wins)"
    local reject_all="host all $POSTGRES_USER all reject"
    local reject_replication="host replication $POSTGRES_USER all reject"
    local new="$hba.superuser-local-only.tmp"
    local status=0

    # Our lines first, then the file without any earlier copy of them: the same result
    # however often it runs.
    printf '%s\n' "$marker" "$reject_all" "$reject_replication" >"$new" || { rm -f "$new"; return 1; }
    grep -v -x -F -e "$marker" -e "$reject_all" -e "$reject_replication" "$hba" >>"$new" || status=$?
    if [ "$status" -gt 1 ]; then  # 1: no line left besides ours, not an error
        rm -f "$new"
        echo "superuser-local-only.sh: could not read $hba" >&2
        return 1
    fi
    if cmp -s "$new" "$hba"; then
        rm -f "$new"
        echo "superuser-local-only.sh: $hba already rejects TCP logins of $POSTGRES_USER"
        return 0
    fi
    chmod 600 "$new" && mv -f "$new" "$hba" || { rm -f "$new"; return 1; }
    echo "superuser-local-only.sh: $hba now rejects TCP logins of $POSTGRES_USER"
    # A running server (the entrypoint's temporary one, or the real one when run by hand)
    # reads pg_hba.conf again on SIGHUP.
    if pg_ctl status -D "$PGDATA" >/dev/null 2>&1; then
        pg_ctl reload -D "$PGDATA" -s || return 1
    fi
}

platform_superuser_local_only
