"""A throwaway PostgreSQL server for the tests and the sync benchmark (plain module).

``base_dsn()`` returns a DSN for a server to test against:

* ``POSFAST_PG_DSN`` if it is set (an existing server; each test database is then
  made with CREATE DATABASE when allowed, else the posfast tables are dropped);
* otherwise a cluster made with ``initdb`` + ``pg_ctl`` in a temporary directory,
  listening on 127.0.0.1 on a free port, run as the ``postgres`` user (via
  ``runuser``) when the tests run as root, stopped and deleted at exit.

``base_dsn()`` returns None only when no PostgreSQL binaries can be found (tests
skip with :data:`SKIP_REASON`); a cluster that is found but fails to start is an
error, never a skip.  Debian: ``apt-get install -y postgresql`` puts the binaries
in ``/usr/lib/postgresql/<version>/bin``, which is searched.
"""
import atexit
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import uuid

SKIP_REASON = ("no PostgreSQL binaries (initdb, pg_ctl) found and POSFAST_PG_DSN is not set: "
               "apt-get install -y postgresql, or point POSFAST_PG_DSN at a server")

_lock = threading.Lock()
_cluster = None


def find_bindir():
    """Directory holding initdb and pg_ctl, or None."""
    candidates = []
    if os.environ.get("POSFAST_PG_BINDIR"):
        candidates.append(os.environ["POSFAST_PG_BINDIR"])
    for name in ("initdb", "pg_ctl"):
        found = shutil.which(name)
        if found:
            candidates.append(os.path.dirname(os.path.realpath(found)))
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    candidates += sorted(glob.glob("/usr/local/pgsql*/bin") + glob.glob("/opt/homebrew/opt/postgresql*/bin"))
    for d in candidates:
        if os.path.isfile(os.path.join(d, "initdb")) and os.path.isfile(os.path.join(d, "pg_ctl")):
            return d
    return None


def _version_key(path):
    part = path.split("/")[-2]
    return int(part) if part.isdigit() else 0


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """initdb + pg_ctl in a temp dir; ``dsn`` connects as superuser ``posfast``."""

    def __init__(self, bindir, *, fsync=False):
        self.bindir = bindir
        self.dir = tempfile.mkdtemp(prefix="posfast-pg-")
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "server.log")
        self.port = _free_port()
        self.run_as = None
        if os.geteuid() == 0:   # postgres refuses to run as root
            self.run_as = "postgres"
            pw = pwd.getpwnam(self.run_as)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self._run("initdb", "-D", self.data, "-A", "trust", "-U", "posfast", "-E", "UTF8", "--no-sync",
                  "--no-instructions")
        opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c max_connections=120 "
                f"-c fsync={'on' if fsync else 'off'} -c full_page_writes={'on' if fsync else 'off'} "
                "-c shared_buffers=64MB")
        self._run("pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "60", "-o", opts, "start")
        self.dsn = f"postgresql://posfast@127.0.0.1:{self.port}/postgres"

    def _run(self, tool, *args):
        cmd = [os.path.join(self.bindir, tool), *args]
        if self.run_as:
            cmd = ["runuser", "-u", self.run_as, "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=self.dir)
        if proc.returncode != 0:
            log = open(self.log).read() if os.path.exists(self.log) else ""
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}\n{log}")

    def stop(self):
        if os.path.isdir(self.data):
            try:
                self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
            except RuntimeError:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)


def base_dsn():
    """DSN of the server to test against, or None when PostgreSQL cannot be found."""
    global _cluster
    if os.environ.get("POSFAST_PG_DSN"):
        return os.environ["POSFAST_PG_DSN"]
    with _lock:
        if _cluster is None:
            bindir = find_bindir()
            if bindir is None:
                return None
            _cluster = Cluster(bindir)
            atexit.register(_cluster.stop)
        return _cluster.dsn


def fresh_database(dsn=None):
    """A DSN of an empty database on the test server (CREATE DATABASE, or dropped tables)."""
    import psycopg
    dsn = dsn or base_dsn()
    name = "posfast_" + uuid.uuid4().hex[:12]
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
    except psycopg.Error:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("DROP VIEW IF EXISTS v_records, v_payments")
            conn.execute("DROP TABLE IF EXISTS records, journals, sync_refusals, registry, tokens, "
                         "terminal_status, reconciliations, posfast_meta")
        return dsn
    return _with_dbname(dsn, name)


def _with_dbname(dsn, name):
    """The same server as ``dsn``, database ``name``, as a postgresql:// URL (what --db takes)."""
    from urllib.parse import quote
    from psycopg.conninfo import conninfo_to_dict
    params = conninfo_to_dict(dsn)
    auth = quote(params.get("user") or "postgres", safe="")
    if params.get("password"):
        auth += ":" + quote(params["password"], safe="")
    host = params.get("host") or "127.0.0.1"
    if host.startswith("/"):
        return f"postgresql://{auth}@/{name}?host={quote(host, safe='')}&port={params.get('port') or 5432}"
    return f"postgresql://{auth}@{host}:{params.get('port') or 5432}/{name}"
