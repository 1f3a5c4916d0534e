"""The PostgreSQL roles of the platform chart: the application roles (warehouse, airflow) are
no superusers, the bootstrap superuser `postgres` has a Secret of its own.

The real init script (taken from the rendered chart's ConfigMap) runs against a real
PostgreSQL the way the postgres image's docker-entrypoint.sh runs it on an empty volume:
initdb with the superuser POSTGRES_USER and its password, CREATE DATABASE "$POSTGRES_DB",
then every *.sql of /docker-entrypoint-initdb.d through
``psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc --dbname "$POSTGRES_DB" -f``
and every (non-executable) *.sh sourced into bash with ``set -Eeo pipefail``, in sorted order,
with the container's environment as the rendered StatefulSet defines it (Secret references
resolved from the rendered Secrets). The container image itself is the boundary not crossed
here: the entrypoint's steps are emulated, the server, psql and the script are real.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import time
from datetime import date
from pathlib import Path

import psycopg
import pyarrow as pa
import pytest
import yaml
from psycopg import errors

from tests.support.helm import render_official, render_platform
from tests.support.postgres import PostgresUnavailable, TemporaryPostgres

INITDB_DIR = "/docker-entrypoint-initdb.d"
CHART_FILES = Path(__file__).resolve().parent.parent / "charts" / "airflow-platform" / "files"
MIGRATION = "migrate-legacy-superuser.psql"
LOCAL_ONLY = "superuser-local-only.sh"
SERVERS = [
    # (StatefulSet, application role and database, its connection Secret, the superuser's Secret)
    ("platform-warehouse", "warehouse", "warehouse-connection", "warehouse-superuser"),
    ("platform-metadata-db", "airflow", "airflow-metadata-connection", "metadata-db-superuser"),
]
SUPERUSER_SECRETS = {superuser: sts for sts, _, _, superuser in SERVERS}


# -- the render ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    return render_platform()


def _index(objects: list[dict]) -> dict[tuple[str, str], dict]:
    return {(obj["kind"], obj["metadata"]["name"]): obj for obj in objects}


def _secret(objects, name: str) -> dict[str, str]:
    return {key: base64.b64decode(value).decode() for key, value in _index(objects)[("Secret", name)]["data"].items()}


def _container(objects, statefulset: str) -> dict:
    (container,) = _index(objects)[("StatefulSet", statefulset)]["spec"]["template"]["spec"]["containers"]
    return container


def container_env(objects, statefulset: str) -> dict[str, str]:
    """The postgres container's environment, as the kubelet would set it from the render."""
    env = {}
    for item in _container(objects, statefulset)["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = _secret(objects, ref["name"])[ref["key"]]
    return env


def entrypoint_runs(scripts: dict[str, str]) -> list[str]:
    """The files docker_process_init_files runs (in its glob's order); it ignores the others."""
    return sorted(name for name in scripts if name.endswith((".sh", ".sql", ".sql.gz", ".sql.xz", ".sql.zst")))


def init_scripts(objects, statefulset: str) -> dict[str, str]:
    """The files the entrypoint finds in /docker-entrypoint-initdb.d: the ConfigMap mounted there."""
    sts = _index(objects)[("StatefulSet", statefulset)]
    pod = sts["spec"]["template"]["spec"]
    (mount,) = [m for m in _container(objects, statefulset)["volumeMounts"] if m["mountPath"] == INITDB_DIR]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    return _index(objects)[("ConfigMap", volume["configMap"]["name"])]["data"]


@pytest.mark.parametrize("statefulset, role, connection_secret, superuser_secret", SERVERS)
def test_bootstrap_is_the_superuser_and_the_application_role_comes_from_the_init_script(
    rendered, statefulset, role, connection_secret, superuser_secret
):
    container = _container(rendered, statefulset)
    env = {item["name"]: item for item in container["env"]}
    assert env["POSTGRES_USER"] == {"name": "POSTGRES_USER", "value": "postgres"}
    assert env["POSTGRES_PASSWORD"]["valueFrom"] == {"secretKeyRef": {"name": superuser_secret, "key": "password"}}
    assert env["POSTGRES_DB"]["value"] == role
    assert env["APP_USER"]["value"] == role
    assert env["APP_PASSWORD"]["valueFrom"] == {"secretKeyRef": {"name": connection_secret, "key": "password"}}
    assert _secret(rendered, superuser_secret)["username"] == "postgres"
    assert len(_secret(rendered, superuser_secret)["password"]) >= 32
    assert _secret(rendered, superuser_secret)["password"] != _secret(rendered, connection_secret)["password"]
    # The clients keep connecting as the application role.
    uri = next(v for k, v in _secret(rendered, connection_secret).items() if k in ("uri", "connection"))
    assert uri.startswith(f"postgresql://{role}:")
    # The chart's files, mounted read-only; the entrypoint runs app-role.sql, then
    # superuser-local-only.sh (it runs *.sh, *.sql and *.sql.<compression> in sorted order,
    # and ignores the rest).
    assert init_scripts(rendered, statefulset) == {
        "app-role.sql": (CHART_FILES / "postgres-app-role.sql").read_text().rstrip("\n"),
        "migrate-legacy-superuser.psql": (CHART_FILES / "postgres-migrate-legacy-superuser.psql").read_text().rstrip("\n"),
        LOCAL_ONLY: (CHART_FILES / "postgres-superuser-local-only.sh").read_text().rstrip("\n"),
    }
    assert entrypoint_runs(init_scripts(rendered, statefulset)) == ["app-role.sql", LOCAL_ONLY]
    # Not executable (the ConfigMap's default mode): the entrypoint sources it.
    (volume,) = [v for v in _index(rendered)[("StatefulSet", statefulset)]["spec"]["template"]["spec"]["volumes"]
                 if v["name"] == "initdb"]
    assert not volume["configMap"].get("defaultMode", 0o644) & 0o111
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == INITDB_DIR]
    assert mount["readOnly"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_the_superuser_secrets_reach_their_own_server_only(rendered):
    for obj in rendered:
        text = yaml.safe_dump(obj)
        for secret, owner in SUPERUSER_SECRETS.items():
            if secret in text and obj["kind"] != "Secret":
                assert (obj["kind"], obj["metadata"]["name"]) == ("StatefulSet", owner), f"{obj['kind']}/{obj['metadata']['name']} names {secret}"
    for obj in render_official():
        text = yaml.safe_dump(obj)
        assert not [s for s in SUPERUSER_SECRETS if s in text], f"{obj['kind']}/{obj['metadata']['name']} names a superuser Secret"


@pytest.mark.parametrize("statefulset", [sts for sts, *_ in SERVERS])
def test_no_password_on_a_command_line(rendered, statefulset):
    container = _container(rendered, statefulset)
    env = container_env(rendered, statefulset)
    command_line = " ".join(container.get("command", []) + container.get("args", []))
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        command_line += " " + " ".join(container[probe]["exec"]["command"])
    secret_env = {name for name in env if "PASSWORD" in name}
    assert secret_env == {"POSTGRES_PASSWORD", "APP_PASSWORD"}
    for name in secret_env:
        assert env[name] not in command_line
        assert f"$({name})" not in command_line  # the kubelet would expand it into argv


@pytest.mark.parametrize("section", ["warehouse", "metadataDatabase"])
def test_a_superuser_name_for_the_application_is_refused(section):
    with pytest.raises(subprocess.CalledProcessError) as failed:
        render_platform("--set", f"{section}.username=postgres")
    assert "username must not be postgres" in failed.value.stderr


# -- the init script on a real server -----------------------------------------------------------


class ImageLikePostgres(TemporaryPostgres):
    """A cluster as the postgres image's entrypoint leaves it before the init scripts: bootstrap
    superuser POSTGRES_USER with password POSTGRES_PASSWORD (initdb --pwfile), and
    pg_setup_hba_conf's ``host all all all scram-sha-256`` appended to pg_hba.conf. Local
    (socket) connections are trusted as in the image. initdb's loopback lines ask for the
    password here (``auth_host``), as for the image's clients in other pods; the image leaves
    them at initdb's default, ``trust``."""

    def start_as(self, env: dict[str, str], auth_host: str = "scram-sha-256") -> None:
        if self.run_as:
            shutil.chown(self.root, self.run_as, self.run_as)
        pwfile = self.root / "pwfile"
        pwfile.write_text(env["POSTGRES_PASSWORD"] + "\n")
        if self.run_as:
            shutil.chown(pwfile, self.run_as, self.run_as)
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "--username", env["POSTGRES_USER"],
            f"--pwfile={pwfile}", "--auth-local=trust", f"--auth-host={auth_host}", "--no-sync",
        )
        pwfile.unlink()
        with (self.data / "pg_hba.conf").open("a") as hba:
            hba.write("\nhost all all all scram-sha-256\n")
        self.options = f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.root} -c fsync=off"
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", self.options, "-l", str(self.root / "log"), "-w", "start")

    def restart(self) -> None:
        """docker_temp_server_stop, then the real server: it reads pg_hba.conf afresh."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", self.options, "-l", str(self.root / "log"), "-w", "restart")

    def psql(self, env: dict[str, str], *args: str, user: str | None = None) -> subprocess.CompletedProcess:
        """docker_process_sql: psql as POSTGRES_USER (or ``user``) over the socket, into POSTGRES_DB,
        with ``env`` as its whole environment (the container's)."""
        command = [str(self.bin / "psql"), "-v", "ON_ERROR_STOP=1", "--username", user or env["POSTGRES_USER"],
                   "--no-password", "--no-psqlrc", "--dbname", env["POSTGRES_DB"], *args]
        process_env = {"PATH": os.environ["PATH"], "PGHOST": str(self.root), "PGPORT": str(self.port), **env}
        return subprocess.run(command, env=process_env, capture_output=True, text=True)

    def shell(self, env: dict[str, str], name: str, text: str, sourced: bool = True) -> subprocess.CompletedProcess:
        """A *.sh init script as the server's OS user (the container's uid 999), with ``env`` as
        the container's environment and PGDATA this server's: sourced into bash with the
        entrypoint's ``set -Eeo pipefail`` or, as by hand, run by sh."""
        script = self.root / name
        script.write_text(text)
        if self.run_as:
            shutil.chown(script, self.run_as, self.run_as)
        command = ["bash", "-c", 'set -Eeo pipefail; . "$1"', "entrypoint", str(script)] if sourced else ["sh", str(script)]
        if self.run_as:
            command = ["runuser", "-u", self.run_as, "--", *command]
        process_env = {"PATH": f"{self.bin}:{os.environ['PATH']}", **env, "PGDATA": str(self.data)}
        return subprocess.run(command, env=process_env, capture_output=True, text=True, cwd=self.root)

    def uri(self, user: str, password: str, database: str) -> str:
        return f"postgresql://{user}:{password}@127.0.0.1:{self.port}/{database}"

    def over_socket(self, user: str, database: str, **options) -> psycopg.Connection:
        """A login over the Unix socket (the image trusts it): what `kubectl exec` gets."""
        return psycopg.connect(host=str(self.root), port=self.port, user=user, dbname=database, autocommit=True, **options)


def entrypoint_init(server: ImageLikePostgres, env: dict[str, str], scripts: dict[str, str], tmp: Path) -> None:
    """docker_setup_db + docker_process_init_files, for the *.sql files the chart ships; the
    ConfigMap's files land in ``tmp`` (the mounted directory)."""
    for name, text in scripts.items():
        (tmp / name).write_text(text)
    with server.over_socket(env["POSTGRES_USER"], "postgres") as admin:
        admin.execute(f'CREATE DATABASE "{env["POSTGRES_DB"]}"')
    for name in entrypoint_runs(scripts):
        assert name.endswith((".sql", ".sh")), f"{name}: the test emulates only .sql and .sh init scripts"
        if name.endswith(".sh"):
            result = server.shell(env, name, scripts[name])
        else:
            result = server.psql(env, "-f", str(tmp / name))
        assert result.returncode == 0, result.stderr


def started_like_the_image(env: dict[str, str]) -> ImageLikePostgres:
    """A fresh server started the way the postgres image starts with ``env`` (skipped locally,
    failed in CI, where there is no PostgreSQL server)."""
    server = ImageLikePostgres()
    try:
        server.start_as(env)
    except (PostgresUnavailable, subprocess.CalledProcessError, OSError) as exc:
        from tests.support.helm import unavailable

        server.stop()
        unavailable(f"no PostgreSQL here: {exc}")
    return server


@pytest.fixture(scope="module", params=[sts for sts, *_ in SERVERS])
def initialised(request, rendered, tmp_path_factory):
    """A fresh server of one StatefulSet, initialised by the chart's script with its env."""
    env = container_env(rendered, request.param)
    server = started_like_the_image(env)
    try:
        tmp = tmp_path_factory.mktemp("initdb")
        scripts = init_scripts(rendered, request.param)
        entrypoint_init(server, env, scripts, tmp)
        server.restart()
        yield server, env, scripts, tmp
    finally:
        server.stop()


def _as_app(server, env, database=None):
    return psycopg.connect(server.uri(env["APP_USER"], env["APP_PASSWORD"], database or env["POSTGRES_DB"]), autocommit=True)


def _as_superuser(server, env, database=None):
    """Over the socket: the only way in for the superuser once superuser-local-only.sh ran."""
    return server.over_socket(env["POSTGRES_USER"], database or env["POSTGRES_DB"])


def role_state(server, env) -> dict:
    with _as_superuser(server, env) as admin:
        role = admin.execute(
            "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, rolcanlogin, rolinherit,"
            " ARRAY(SELECT b.rolname FROM pg_auth_members m JOIN pg_roles b ON b.oid = m.roleid WHERE m.member = r.oid)"
            " FROM pg_roles r WHERE rolname = %s",
            [env["APP_USER"]],
        ).fetchone()
        owners = dict(admin.execute("SELECT datname, pg_get_userbyid(datdba) FROM pg_database").fetchall())
        roles = [name for (name,) in admin.execute("SELECT rolname FROM pg_roles WHERE rolname !~ '^pg_' ORDER BY 1")]
    return {"role": role, "owners": owners, "roles": roles}


def test_the_application_role_is_no_superuser_and_owns_only_its_database(initialised):
    server, env, _, _ = initialised
    state = role_state(server, env)
    # superuser, createdb, createrole, replication, bypassrls: none; login; member of no role.
    assert state["role"] == (False, False, False, False, False, True, True, [])
    assert state["roles"] == sorted(["postgres", env["APP_USER"]])
    assert state["owners"][env["POSTGRES_DB"]] == env["APP_USER"]
    assert {db for db, owner in state["owners"].items() if owner == env["APP_USER"]} == {env["POSTGRES_DB"]}
    with _as_superuser(server, env) as admin:
        assert admin.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (True,)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(server.uri(env["APP_USER"], "wrong" + env["APP_PASSWORD"], env["POSTGRES_DB"])).close()


def test_the_application_role_creates_tables_in_public(initialised):
    server, env, _, _ = initialised
    with _as_app(server, env) as app:
        with app.transaction():
            app.execute("CREATE TABLE public.role_check (id bigint PRIMARY KEY, name text)")
            app.execute("SELECT pg_advisory_xact_lock(hashtextextended('role_check', 0))")
            with app.cursor().copy("COPY role_check (id, name) FROM STDIN") as copy:
                copy.write_row((1, "one"))
        assert app.execute("SELECT count(*), pg_get_userbyid(relowner) FROM role_check, pg_class"
                           " WHERE oid = 'role_check'::regclass GROUP BY 2").fetchone() == (1, env["APP_USER"])
        app.execute("DROP TABLE role_check")
        # Its own schemas, too (it owns the database).
        app.execute("CREATE SCHEMA role_check_schema")
        app.execute("DROP SCHEMA role_check_schema")


def test_the_loader_runs_as_the_warehouse_role(initialised, tmp_path):
    """The project's loader (CREATE TABLE under an advisory lock, DELETE, binary COPY)."""
    from category_pipeline.loader import load_partition
    from category_pipeline.schema import DAILY_SUMMARY
    from category_pipeline.storage import write_dataset
    from category_pipeline.warehouse import Warehouse

    server, env, _, _ = initialised
    day = date(2026, 4, 1)
    rows = pa.RecordBatch.from_pydict(
        {"order_date": [day, day], "category": ["home", "toys"], "orders": [3, 4], "units": [5, 6],
         "revenue": [7.5, 8.5], "quarantined": [0, 1]},
        schema=DAILY_SUMMARY,
    )
    uri = str(tmp_path / "summary.parquet")
    write_dataset(uri, DAILY_SUMMARY, iter([rows]))
    warehouse = Warehouse.from_uri(server.uri(env["APP_USER"], env["APP_PASSWORD"], env["POSTGRES_DB"]))
    for _ in range(2):  # the second load replaces the partition the first made
        result = load_partition(warehouse, {"daily_sales_summary": uri}, {"order_date": day.isoformat()})
    assert result == {"daily_sales_summary": {"loaded": 2, "replaced": 2}}
    with _as_app(server, env) as app:
        assert app.execute("SELECT sum(orders), pg_get_userbyid((SELECT relowner FROM pg_class WHERE relname = 'daily_sales_summary'))"
                           " FROM daily_sales_summary").fetchone() == (7, env["APP_USER"])
        app.execute("DROP TABLE daily_sales_summary")


@pytest.mark.parametrize("initialised", ["platform-metadata-db"], indirect=True)
def test_airflow_migrates_its_database_as_the_metadata_role(initialised, tmp_path):
    """`airflow db migrate` (what the official chart's migration job runs) needs no superuser."""
    server, env, _, _ = initialised
    uri = server.uri(env["APP_USER"], env["APP_PASSWORD"], env["POSTGRES_DB"])
    airflow_env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": uri.replace("postgresql://", "postgresql+psycopg2://", 1),
    }
    result = subprocess.run(["airflow", "db", "migrate"], env=airflow_env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    with _as_app(server, env) as app:
        owners = dict(app.execute(
            "SELECT relname, pg_get_userbyid(relowner) FROM pg_class WHERE relname IN ('alembic_version', 'dag_run', 'task_instance')"
        ).fetchall())
    assert owners == {"alembic_version": "airflow", "dag_run": "airflow", "task_instance": "airflow"}


@pytest.mark.parametrize(
    "statement, error",
    [
        ("COPY (SELECT 1) TO PROGRAM 'true'", errors.InsufficientPrivilege),
        ("COPY own_table FROM PROGRAM 'id'", errors.InsufficientPrivilege),
        ("COPY own_table FROM '/etc/passwd'", errors.InsufficientPrivilege),
        ("SELECT pg_read_file('PG_VERSION')", errors.InsufficientPrivilege),
        ("ALTER SYSTEM SET work_mem = '1GB'", errors.InsufficientPrivilege),
        ("CREATE EXTENSION file_fdw", errors.InsufficientPrivilege),  # untrusted: superuser only
        ("CREATE ROLE intruder LOGIN", errors.InsufficientPrivilege),
        ("CREATE DATABASE intruder", errors.InsufficientPrivilege),
        ("ALTER ROLE CURRENT_USER SUPERUSER", errors.InsufficientPrivilege),
        ("SET ROLE postgres", errors.InsufficientPrivilege),
        ("SELECT * FROM superuser_table", errors.InsufficientPrivilege),
    ],
)
def test_what_the_application_role_may_not_do(initialised, statement, error):
    server, env, _, _ = initialised
    with _as_superuser(server, env) as admin:
        admin.execute("CREATE TABLE IF NOT EXISTS superuser_table (secret text)")
    with _as_app(server, env) as app:
        app.execute("CREATE TABLE IF NOT EXISTS own_table (line text)")
        with pytest.raises(error):
            app.execute(statement)


def test_the_application_role_cannot_enter_other_databases(initialised):
    server, env, _, _ = initialised
    with _as_superuser(server, env, "postgres") as admin:
        admin.execute("CREATE TABLE IF NOT EXISTS elsewhere (secret text)")
    for database in ("postgres", "template1"):
        with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
            psycopg.connect(server.uri(env["APP_USER"], env["APP_PASSWORD"], database)).close()


def test_running_the_script_again_changes_nothing(initialised):
    server, env, scripts, tmp = initialised
    with _as_app(server, env) as app:
        app.execute("CREATE TABLE IF NOT EXISTS survives (id int)")
        app.execute("INSERT INTO survives VALUES (1)")
    before = role_state(server, env)
    result = server.psql(env, "-f", str(tmp / "app-role.sql"))
    assert result.returncode == 0, result.stderr
    assert role_state(server, env) == before
    with _as_app(server, env) as app:
        assert app.execute("SELECT id FROM survives").fetchall() == [(1,)]
        app.execute("DROP TABLE survives")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"APP_PASSWORD": None}, "APP_PASSWORD is not set"),
        ({"APP_USER": None}, "APP_USER is not set"),
        ({"APP_PASSWORD": ""}, "APP_PASSWORD is empty"),
        ({"APP_USER": "postgres"}, "APP_USER is the bootstrap superuser"),
        ({"POSTGRES_DB": "postgres"}, "POSTGRES_DB is a system database"),
    ],
)
def test_bad_environment_fails_naming_it(initialised, change, message):
    server, env, scripts, tmp = initialised
    bad_env = {name: value for name, value in {**env, **change}.items() if value is not None}
    before = role_state(server, env)
    result = server.psql(bad_env, "-f", str(tmp / "app-role.sql"))
    assert result.returncode != 0
    assert message in result.stderr
    assert role_state(server, env) == before


def test_the_password_stays_out_of_the_server_log(initialised):
    server, env, scripts, tmp = initialised
    with _as_superuser(server, env) as admin:
        admin.execute("ALTER SYSTEM SET log_statement = 'all'")
        admin.execute("SELECT pg_reload_conf()")
    try:
        assert server.psql(env, "-f", str(tmp / "app-role.sql")).returncode == 0
    finally:
        with _as_superuser(server, env) as admin:
            admin.execute("ALTER SYSTEM RESET log_statement")
            admin.execute("SELECT pg_reload_conf()")
    log = (server.root / "log").read_text()
    assert env["APP_PASSWORD"] not in log
    # log_statement = all was in force until the script's first statement turned it off.
    assert "statement: SET log_statement = 'none'" in log


# -- the superuser stays off TCP ----------------------------------------------------------------


def _tcp_rejects(server, user: str, password: str, database: str, **options) -> None:
    with pytest.raises(psycopg.OperationalError, match=f'pg_hba.conf rejects (replication )?connection for host "127.0.0.1", user "{user}"'):
        psycopg.connect(server.uri(user, password, database), **options).close()


def _hba_rules(server, env) -> list[tuple]:
    """pg_hba.conf as the server parses it: (type, databases, users, address, method), in order."""
    with _as_superuser(server, env) as admin:
        rules = admin.execute(
            "SELECT type, database, user_name, address, auth_method, error FROM pg_hba_file_rules ORDER BY line_number"
        ).fetchall()
    assert [rule for rule in rules if rule[-1]] == []
    return [rule[:-1] for rule in rules]


def test_the_superuser_logs_in_over_the_local_socket_only(initialised):
    server, env, _, _ = initialised
    superuser, password = env["POSTGRES_USER"], env["POSTGRES_PASSWORD"]
    for database in (env["POSTGRES_DB"], "postgres", "template1"):
        _tcp_rejects(server, superuser, password, database)
    _tcp_rejects(server, superuser, password, "postgres", replication="true")  # physical replication
    # The application role still comes in over TCP, with its password.
    with _as_app(server, env) as app:
        assert app.execute("SELECT current_user, inet_server_addr() IS NOT NULL").fetchone() == (env["APP_USER"], True)
    # The superuser still comes in over the pod's socket (kubectl exec).
    with _as_superuser(server, env) as admin:
        assert admin.execute("SELECT rolsuper, inet_server_addr() FROM pg_roles WHERE rolname = current_user").fetchone() == (True, None)
    # The reject lines come first: nothing after them can let the superuser in over TCP.
    rules = _hba_rules(server, env)
    assert rules[:2] == [
        ("host", ["all"], [superuser], "all", "reject"),
        ("host", ["replication"], [superuser], "all", "reject"),
    ]
    assert ("host", ["all"], ["all"], "all", "scram-sha-256") in rules[2:]  # the image's line, kept


def test_running_the_hba_script_again_changes_nothing(initialised):
    server, env, scripts, _ = initialised
    hba = server.data / "pg_hba.conf"
    before = hba.read_bytes()
    for sourced in (True, False):
        result = server.shell(env, LOCAL_ONLY, scripts[LOCAL_ONLY], sourced=sourced)
        assert result.returncode == 0, result.stderr
        assert "already rejects TCP logins of postgres" in result.stdout
        assert hba.read_bytes() == before
    assert before.decode().count(f"host all {env['POSTGRES_USER']} all reject\n") == 1
    assert [p.name for p in server.data.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize(
    "change, message",
    [
        ({"POSTGRES_USER": None}, "POSTGRES_USER is not set"),
        ({"POSTGRES_USER": "post gres"}, "POSTGRES_USER 'post gres' is not a plain role name"),
        ({"POSTGRES_USER": "all,app"}, "POSTGRES_USER 'all,app' is not a plain role name"),
    ],
)
def test_the_hba_script_fails_naming_bad_environment(initialised, change, message):
    server, env, scripts, _ = initialised
    bad_env = {name: value for name, value in {**env, **change}.items() if value is not None}
    before = (server.data / "pg_hba.conf").read_bytes()
    result = server.shell(bad_env, LOCAL_ONLY, scripts[LOCAL_ONLY])
    assert result.returncode != 0
    assert message in result.stderr
    assert (server.data / "pg_hba.conf").read_bytes() == before


def test_the_hba_script_fails_without_pg_hba_conf(rendered, tmp_path):
    """Sourced by the entrypoint (set -e): its failure stops the initialisation."""
    env = container_env(rendered, "platform-warehouse")
    script = tmp_path / LOCAL_ONLY
    script.write_text(init_scripts(rendered, "platform-warehouse")[LOCAL_ONLY])
    result = subprocess.run(
        ["bash", "-c", 'set -Eeo pipefail; . "$1"; echo still running', "entrypoint", str(script)],
        env={"PATH": os.environ["PATH"], **env, "PGDATA": str(tmp_path / "empty")}, capture_output=True, text=True,
    )
    assert result.returncode != 0
    assert f"{tmp_path}/empty/pg_hba.conf is missing" in result.stderr
    assert "still running" not in result.stdout


def test_the_superuser_is_rejected_where_the_image_trusts_the_loopback(rendered, tmp_path):
    """The image keeps initdb's default ``host all all 127.0.0.1/32 trust``: the reject lines
    must come before it, or the superuser walks in over the pod's loopback without a password."""
    env = container_env(rendered, "platform-warehouse")
    server = ImageLikePostgres()
    try:
        server.start_as(env, auth_host="trust")
    except (PostgresUnavailable, subprocess.CalledProcessError, OSError) as exc:
        from tests.support.helm import unavailable

        server.stop()
        unavailable(f"no PostgreSQL here: {exc}")
    try:
        psycopg.connect(server.uri(env["POSTGRES_USER"], "not-the-password", "postgres")).close()  # trusted, before
        entrypoint_init(server, env, init_scripts(rendered, "platform-warehouse"), tmp_path)
        server.restart()
        _tcp_rejects(server, env["POSTGRES_USER"], "not-the-password", "postgres")
        _tcp_rejects(server, env["POSTGRES_USER"], env["POSTGRES_PASSWORD"], env["POSTGRES_DB"])
        with _as_app(server, env) as app:
            assert app.execute("SELECT current_user").fetchone() == (env["APP_USER"],)
        with _as_superuser(server, env) as admin:
            assert admin.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (True,)
    finally:
        server.stop()


# -- a volume from before the superuser split ---------------------------------------------------


def test_the_migration_leaves_a_new_server_alone(initialised):
    """The documented command, on a server this chart version initialised: nothing happens."""
    server, env, _, tmp = initialised
    before = role_state(server, env)
    result = server.psql(env, "-f", str(tmp / MIGRATION), user=env["APP_USER"])
    assert result.returncode == 0, result.stderr
    assert "Nothing to migrate" in result.stdout
    assert role_state(server, env) == before


@pytest.fixture(params=[sts for sts, *_ in SERVERS])
def legacy(request, rendered, tmp_path):
    """A server as the chart before the split left it: initdb --username=<app role> with the
    connection Secret's password, POSTGRES_DB owned by that superuser, with data in it."""
    env = container_env(rendered, request.param)
    legacy_env = {**env, "POSTGRES_USER": env["APP_USER"], "POSTGRES_PASSWORD": env["APP_PASSWORD"]}
    legacy_env = {name: value for name, value in legacy_env.items() if not name.startswith("APP_")}
    server = started_like_the_image(legacy_env)
    try:
        with psycopg.connect(server.uri(env["APP_USER"], env["APP_PASSWORD"], "postgres"), autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{env["POSTGRES_DB"]}"')
        with _as_app(server, env) as old:
            old.execute("CREATE TYPE mood AS ENUM ('ok', 'bad')")
            old.execute("CREATE DOMAIN positive AS int CHECK (VALUE > 0)")
            old.execute("CREATE TABLE runs (id serial PRIMARY KEY, ident bigint GENERATED ALWAYS AS IDENTITY,"
                        " state mood, n positive)")
            old.execute("INSERT INTO runs (state, n) VALUES ('ok', 1)")
            old.execute("CREATE SEQUENCE free_counter")
            old.execute("CREATE VIEW ok_runs AS SELECT * FROM runs WHERE state = 'ok'")
            old.execute("CREATE MATERIALIZED VIEW run_count AS SELECT count(*) FROM runs")
            old.execute("CREATE TABLE parts (day date) PARTITION BY RANGE (day)")
            old.execute("CREATE TABLE parts_2026 PARTITION OF parts FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')")
            old.execute("CREATE SCHEMA extra")
            old.execute("CREATE TABLE extra.notes (note text)")
            old.execute("CREATE FUNCTION twice(int) RETURNS int LANGUAGE sql AS 'SELECT $1 * 2'")
        for name, text in init_scripts(rendered, request.param).items():
            (tmp_path / name).write_text(text)
        yield server, env, tmp_path
    finally:
        server.stop()


def _owned_by_others(connection, role: str) -> list[str]:
    """Objects of the current database outside the system schemas not owned by ``role``."""
    user_schemas = "(SELECT oid FROM pg_namespace WHERE nspname NOT IN ('pg_catalog', 'information_schema') AND left(nspname, 3) <> 'pg_')"
    return [name for (name,) in connection.execute(
        f"""SELECT relname FROM pg_class WHERE relnamespace IN {user_schemas} AND pg_get_userbyid(relowner) <> %(r)s
            UNION ALL SELECT typname FROM pg_type WHERE typnamespace IN {user_schemas} AND pg_get_userbyid(typowner) <> %(r)s
            UNION ALL SELECT proname FROM pg_proc WHERE pronamespace IN {user_schemas} AND pg_get_userbyid(proowner) <> %(r)s
            UNION ALL SELECT nspname FROM pg_namespace WHERE nspname = 'extra' AND pg_get_userbyid(nspowner) <> %(r)s""",
        {"r": role},
    )]


def test_the_migration_demotes_the_legacy_superuser(legacy, tmp_path):
    server, env, scripts = legacy
    lingering = _as_app(server, env)  # a client of the old superuser role, connected throughout
    with _as_app(server, env) as old:
        assert old.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (True,)
        assert _owned_by_others(old, env["APP_USER"]) == []

    result = server.psql(env, "-f", str(scripts / MIGRATION), user=env["APP_USER"])
    assert result.returncode == 0, result.stderr
    assert "Migrated" in result.stdout

    state = role_state(server, env)
    assert state["role"] == (False, False, False, False, False, True, True, [])
    assert state["roles"] == sorted(["postgres", env["APP_USER"]])
    assert state["owners"][env["POSTGRES_DB"]] == env["APP_USER"]
    with _as_superuser(server, env) as admin:
        assert admin.execute("SELECT oid, rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (10, True)
    with pytest.raises(psycopg.OperationalError):
        lingering.execute("SELECT 1")  # its session ended: it reconnects as the new role
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(server.uri("postgres", env["APP_PASSWORD"], "postgres")).close()

    with _as_app(server, env) as app:
        assert _owned_by_others(app, env["APP_USER"]) == []
        app.execute("INSERT INTO runs (state, n) VALUES ('bad', 2)")
        assert app.execute("SELECT max(id), max(ident), twice(21), nextval('free_counter') FROM runs").fetchone() == (2, 2, 42, 1)
        app.execute("REFRESH MATERIALIZED VIEW run_count")
        assert app.execute("SELECT count(*) FROM ok_runs").fetchone() == (1,)
        app.execute("INSERT INTO parts VALUES ('2026-05-01')")
        app.execute("INSERT INTO extra.notes VALUES ('still mine')")
        with pytest.raises(errors.InsufficientPrivilege):
            app.execute("CREATE ROLE intruder")

    # Once is enough: a second run finds nothing to do.
    before = role_state(server, env)
    again = server.psql(env, "-f", str(scripts / MIGRATION), user=env["APP_USER"])
    assert again.returncode == 0, again.stderr
    assert "Nothing to migrate" in again.stdout
    assert role_state(server, env) == before


def _until_rejected(server, user: str, password: str, database: str, deadline_seconds: float = 10.0) -> None:
    """pg_ctl reload only signals the server: wait until it has read pg_hba.conf again."""
    deadline = time.monotonic() + deadline_seconds
    while True:
        try:
            psycopg.connect(server.uri(user, password, database)).close()
        except psycopg.OperationalError as exc:
            if "pg_hba.conf rejects" in str(exc) or time.monotonic() > deadline:
                break
        else:
            if time.monotonic() > deadline:
                break
        time.sleep(0.1)
    _tcp_rejects(server, user, password, database)


def test_by_hand_on_a_legacy_volume_the_superuser_leaves_tcp(legacy):
    """The init scripts never run on an existing volume: after the migration, the documented
    `kubectl exec ... sh /docker-entrypoint-initdb.d/superuser-local-only.sh` edits pg_hba.conf
    and reloads the running server."""
    server, env, scripts = legacy
    result = server.psql(env, "-f", str(scripts / MIGRATION), user=env["APP_USER"])
    assert result.returncode == 0, result.stderr
    with _as_superuser(server, env) as admin:  # the migrated superuser, still on TCP until then
        assert admin.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (True,)
    psycopg.connect(server.uri(env["POSTGRES_USER"], env["POSTGRES_PASSWORD"], "postgres")).close()

    result = server.shell(env, LOCAL_ONLY, (scripts / LOCAL_ONLY).read_text(), sourced=False)
    assert result.returncode == 0, result.stderr
    assert "now rejects TCP logins of postgres" in result.stdout
    _until_rejected(server, env["POSTGRES_USER"], env["POSTGRES_PASSWORD"], env["POSTGRES_DB"])
    with _as_app(server, env) as app:
        assert app.execute("SELECT count(*) FROM runs").fetchone() == (1,)
    with _as_superuser(server, env) as admin:
        assert admin.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (True,)
