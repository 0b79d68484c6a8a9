"""The run store: each saved :class:`~interp.runs.Result` as a Parquet file (its frame) and a
JSON file (meta, provenance, figure), with a catalog row in an embedded DuckDB database.

Layout under :func:`root` (``$INTERP_RUNS``, default ``$INTERP_CACHE/runs``)::

    catalog.duckdb         the catalog: table ``runs`` (one row per run), ``store_info`` (format,
                           version), table macros ``run_frame(id)`` and ``frames()`` reading the
                           Parquet files directly
    catalog.lock           the lock every catalog access holds (DuckDB allows one writer per file)
    data/<id>/frame.parquet, data/<id>/run.json   a saved run (both or neither: see below)
    tmp/<id>.<pid>/        a save in progress
    corrupt/               catalogs set aside because DuckDB could not read them

A save is atomic: a catalog row marked ``saving`` first, the two files written and fsynced in
``tmp/``, the folder renamed into ``data/`` (one rename), then the row marked ``ok``.  A save
that fails marks its row ``failed`` and removes its folder; a process killed mid-save leaves its
row ``saving`` with a dead pid, which the next access marks ``failed`` (and its temporary folder
is removed).  Two processes (or two threads of the app) take turns on the catalog through an
exclusive ``flock`` on ``catalog.lock`` held only for each short catalog update.

The files are the truth and the catalog an index of them: a catalog DuckDB cannot read is
moved to ``corrupt/`` and rebuilt from the ``run.json`` files.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import difflib
import errno
import fcntl
import json
import os
import re
import secrets
import shutil
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from interp.errors import InputError, SetupError
from interp.runs.provenance import Provenance
from interp.runs.result import FigureSpec, Result, decode, encode

FORMAT = "interp.runs"
#: the store format this interp writes; a store (or run file) of a higher version is refused
VERSION = 1
#: ``MIGRATIONS[v](con, store)`` upgrades a catalog of version v to v + 1 (run files of older
#: versions are read as they are: each version's reader accepts every earlier layout)
MIGRATIONS: dict[int, Callable[[Any, Store], None]] = {}
LOCK_TIMEOUT = 60.0  # seconds a catalog access waits for another process before giving up
STALE_SAVE = 6 * 3600.0  # a save still "saving" after this long (another host, a reused pid) failed
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
STATUSES = ("saving", "ok", "failed")
FULL_DISK = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)

SCHEMA = """
CREATE TABLE store_info (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE runs (
    id VARCHAR PRIMARY KEY,
    status VARCHAR NOT NULL,      -- saving | ok | failed
    error VARCHAR,                -- why a save failed
    saved TIMESTAMP,              -- when the save began (UTC)
    saved_from VARCHAR,           -- python | cli | app | notebook | reproduce
    label VARCHAR,
    analysis VARCHAR,             -- the analysis's short name (e.g. patching, head_scores)
    function VARCHAR,             -- its dotted name
    model VARCHAR,
    model_sha256 VARCHAR,
    family VARCHAR,
    started TIMESTAMP,            -- when the run began (UTC)
    wall_seconds DOUBLE,
    n_rows BIGINT,
    columns VARCHAR[],
    interp_version VARCHAR,
    git_commit VARCHAR,
    device VARCHAR,
    dtype VARCHAR,
    meta JSON,
    arguments JSON,
    pid INTEGER,
    host VARCHAR
);
"""
COLUMNS = (
    "id, status, error, saved, saved_from, label, analysis, function, model, model_sha256, family, started, "
    "wall_seconds, n_rows, columns, interp_version, git_commit, device, dtype, meta, arguments, pid, host"
).split(", ")
LISTED = [
    "id",
    "status",
    "saved",
    "analysis",
    "model",
    "family",
    "n_rows",
    "wall_seconds",
    "saved_from",
    "label",
    "git_commit",
    "interp_version",
    "error",
]


class RunStoreWarning(UserWarning):
    """Something in the run store was repaired (a catalog rebuilt, a save marked failed)."""


def root() -> Path:
    """The store's folder: ``$INTERP_RUNS``, else ``$INTERP_CACHE/runs`` (not created here)."""
    from interp.paths import cache_dir

    env = os.environ.get("INTERP_RUNS", "").strip()
    return Path(env).expanduser() if env else cache_dir() / "runs"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text[:500]


def _disk_full(e: BaseException) -> bool:
    if isinstance(e, OSError) and e.errno in FULL_DISK:
        return True
    text = str(e).lower()
    return "no space left" in text or "disk quota" in text or "disk is full" in text


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - a platform without directory descriptors
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def _alive(pid: int | None, host: str | None) -> bool:
    if pid is None:
        return False
    if host and host != socket.gethostname():
        return True  # another machine's process: only its age can tell
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_HELD = threading.local()  # catalog locks this thread holds, by store path (re-entrant)


class Store:
    """A run store at ``path`` (default :func:`root`)."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path).expanduser() if path is not None else root()
        self.data = self.path / "data"
        self.tmp = self.path / "tmp"
        self.catalog_path = self.path / "catalog.duckdb"
        self.lock_path = self.path / "catalog.lock"

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    # --- locking and the catalog -------------------------------------------------------
    def _ensure_dirs(self) -> None:
        try:
            for d in (self.path, self.data, self.tmp):
                d.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SetupError(f"cannot create the run store at {self.path}: {e.strerror or e}") from None

    @contextlib.contextmanager
    def locked(self, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
        """Holds the store's exclusive lock (re-entrant within a thread)."""
        held = getattr(_HELD, "paths", None)
        if held is None:
            held = _HELD.paths = {}
        key = os.path.abspath(self.path)
        if held.get(key):
            held[key] += 1
            try:
                yield
            finally:
                held[key] -= 1
            return
        self._ensure_dirs()
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise SetupError(
                            f"the run store at {self.path} stayed locked by another process for {timeout:.0f} s; "
                            "try again, or check for a hung interp process"
                        ) from None
                    time.sleep(0.005 + 0.02 * secrets.randbelow(100) / 100)
            held[key] = 1
            try:
                yield
            finally:
                held.pop(key, None)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def catalog(self, reconcile: bool = True) -> Iterator[Any]:
        """An open, checked catalog connection under the lock (closed on exit)."""
        import duckdb

        with self.locked():
            con = self._connect()
            try:
                if reconcile:
                    self._reconcile(con)
                yield con
            except duckdb.Error as e:
                if _disk_full(e):
                    raise SetupError(f"the disk holding the run store {self.path} is full: {_one_line(e)}") from None
                raise
            finally:
                con.close()

    def _connect(self):
        import duckdb

        for attempt in range(2):
            try:
                con = self._open(duckdb)
            except _Corrupt as e:
                if attempt:
                    raise SetupError(f"the run catalog {self.catalog_path} cannot be rebuilt: {e}") from None
                self._set_aside(str(e))
                continue
            return con
        raise AssertionError("unreachable")  # pragma: no cover

    def _open(self, duckdb):
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            try:
                con = duckdb.connect(str(self.catalog_path))
                break
            except duckdb.Error as e:
                msg = _one_line(e)
                if "lock" in msg.lower():  # another program (a duckdb shell) holds the file
                    if time.monotonic() > deadline:
                        raise SetupError(
                            f"the run catalog {self.catalog_path} is open in another program ({msg}); close it "
                            "(or open it read-only: duckdb -readonly)"
                        ) from None
                    time.sleep(0.1)
                    continue
                if "version number" in msg.lower() or "storage version" in msg.lower():
                    raise SetupError(
                        f"the run catalog {self.catalog_path} was written by a newer DuckDB ({msg}); "
                        "upgrade duckdb (pip install -U duckdb)"
                    ) from None
                raise _Corrupt(msg) from None
        try:
            self._prepare(con)
        except (SetupError, InputError):
            con.close()
            raise
        except duckdb.Error as e:
            con.close()
            if _disk_full(e):
                raise SetupError(f"the disk holding the run store {self.path} is full: {_one_line(e)}") from None
            raise _Corrupt(_one_line(e)) from None
        return con

    def _prepare(self, con) -> None:
        """Creates the schema of a new catalog (indexing any run files already there), checks
        the version of an existing one and migrates an older one."""
        import duckdb

        try:
            info = dict(con.execute("SELECT key, value FROM store_info").fetchall())
        except duckdb.CatalogException:
            info = None
        if info is None:
            tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
            if tables:
                raise _Corrupt(f"it holds tables {sorted(tables)} but no store_info: not an interp run catalog")
            con.execute("BEGIN")
            con.execute(SCHEMA)
            con.execute(
                "INSERT INTO store_info VALUES ('format', ?), ('version', ?), ('created_by', ?)",
                [FORMAT, str(VERSION), _interp_version()],
            )
            self._index_files(con)
            con.execute("COMMIT")
            info = dict(con.execute("SELECT key, value FROM store_info").fetchall())
        if info.get("format") != FORMAT:
            raise _Corrupt(f"its store_info says format {info.get('format')!r}, not {FORMAT!r}")
        try:
            version = int(info.get("version", ""))
        except ValueError:
            raise _Corrupt(f"its store_info holds version {info.get('version')!r}") from None
        if version > VERSION:
            raise SetupError(
                f"the run store at {self.path} was written by a newer interp (store format {version}, "
                f"{info.get('written_by') or info.get('created_by') or 'unknown version'}); this interp "
                f"({_interp_version()}) reads formats up to {VERSION}: upgrade interp, or set INTERP_RUNS "
                "to another folder"
            )
        if version < VERSION:
            con.execute("BEGIN")
            for v in range(version, VERSION):
                if v not in MIGRATIONS:
                    con.execute("ROLLBACK")
                    raise SetupError(f"no migration of the run store from format {v} to {v + 1}")
                MIGRATIONS[v](con, self)
            con.execute("UPDATE store_info SET value = ? WHERE key = 'version'", [str(VERSION)])
            con.execute("COMMIT")
        if info.get("root") != str(self.path) or info.get("written_by") != _interp_version():
            data = str(self.data).replace("'", "''")
            con.execute(
                "CREATE OR REPLACE MACRO run_frame(run_id, data := '" + data + "') AS TABLE "
                "SELECT * FROM read_parquet(data || '/' || run_id || '/frame.parquet')"
            )
            con.execute(
                "CREATE OR REPLACE MACRO frames(data := '" + data + "') AS TABLE "
                "SELECT regexp_extract(filename, '([^/\\\\]+)[/\\\\]frame[.]parquet$', 1) AS run_id, * EXCLUDE (filename) "
                "FROM read_parquet(data || '/*/frame.parquet', filename = true, union_by_name = true)"
            )
            con.execute(
                "INSERT OR REPLACE INTO store_info VALUES ('root', ?), ('written_by', ?)",
                [str(self.path), _interp_version()],
            )

    def _set_aside(self, why: str) -> None:
        """Moves an unreadable catalog to ``corrupt/`` (a fresh one is rebuilt from the files)."""
        target = self.path / "corrupt"
        target.mkdir(exist_ok=True)
        stamp = _now().strftime("%Y%m%d-%H%M%S")
        moved = target / f"catalog-{stamp}-{secrets.token_hex(2)}.duckdb"
        for suffix in ("", ".wal"):
            src = Path(str(self.catalog_path) + suffix)
            if src.exists():
                os.replace(src, Path(str(moved) + suffix))
        warnings.warn(
            RunStoreWarning(
                f"the run catalog could not be read ({why}); moved it to {moved} and rebuilt it from the run files"
            ),
            stacklevel=4,
        )

    def _index_files(self, con) -> None:
        """Catalog rows for every readable ``data/<id>/run.json`` (a rebuilt catalog)."""
        if not self.data.is_dir():
            return
        for d in sorted(self.data.iterdir()):
            if not d.is_dir() or not ID_RE.match(d.name):
                continue
            try:
                doc = _read_doc(d / "run.json", d.name)
                n_rows = _parquet_rows(d / "frame.parquet")
            except InputError:
                continue  # an unreadable run stays on disk; load(id) says what is wrong with it
            row = _row_of(doc, n_rows)
            con.execute(
                f"INSERT OR REPLACE INTO runs ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                list(row.values()),
            )

    def _reconcile(self, con) -> None:
        """Marks saves whose process died ``failed`` (or ``ok`` when their files made it) and
        removes temporary folders of dead processes."""
        rows = con.execute("SELECT id, pid, host, saved FROM runs WHERE status = 'saving'").fetchall()
        for rid, pid, host, saved in rows:
            old = saved is not None and (_now() - saved).total_seconds() > STALE_SAVE
            if _alive(pid, host) and not old:
                continue
            done = self.data / rid / "run.json"
            if done.is_file():  # killed between the rename and the last catalog update: the files are whole
                try:
                    doc = _read_doc(done, rid)
                    self._update(con, _row_of(doc, _parquet_rows(self.data / rid / "frame.parquet")))
                    continue
                except InputError:
                    pass
            con.execute(
                "UPDATE runs SET status = 'failed', error = ? WHERE id = ?",
                [f"the saving process (pid {pid} on {host}) ended before the run was written; nothing was kept", rid],
            )
        if self.tmp.is_dir():
            for d in self.tmp.iterdir():
                _, _, pid_text = d.name.rpartition(".")
                if pid_text.isdigit() and not _alive(int(pid_text), socket.gethostname()):
                    shutil.rmtree(d, ignore_errors=True)

    @staticmethod
    def _update(con, row: dict) -> None:
        sets = ", ".join(f"{k} = ?" for k in row if k != "id")
        con.execute(f"UPDATE runs SET {sets} WHERE id = ?", [v for k, v in row.items() if k != "id"] + [row["id"]])

    # --- ids ---------------------------------------------------------------------------
    def resolve(self, run_id: str) -> str:
        """The id of a saved run from ``run_id`` (the id or a unique prefix of it); raises naming
        the closest ids when there is none, or why a failed save has nothing to load."""
        text = str(run_id).strip()
        if not ID_RE.match(text):
            raise InputError(
                f"{run_id!r} is not a run id (ids look like 20261207-142530-3fa2c1; see `interp runs list`)"
            )
        if (self.data / text / "run.json").is_file():
            return text
        with self.catalog() as con:
            row = con.execute("SELECT status, error, pid FROM runs WHERE id = ?", [text]).fetchone()
            if row is not None and row[0] == "failed":
                raise InputError(f"run {text} failed to save ({row[1]}); there is nothing to load")
            if row is not None and row[0] == "saving":
                raise InputError(f"run {text} is still being saved (by process {row[2]}); try again in a moment")
            ok = [r[0] for r in con.execute("SELECT id FROM runs WHERE status = 'ok'").fetchall()]
        candidates = sorted(
            set(ok) | ({d.name for d in self.data.iterdir() if d.is_dir()} if self.data.is_dir() else set())
        )
        starts = [c for c in candidates if c.startswith(text)]
        if len(starts) == 1:
            return starts[0]
        if len(starts) > 1:
            raise InputError(
                f"{text!r} is the start of {len(starts)} run ids ({', '.join(starts[:5])}); give more of it"
            )
        close = difflib.get_close_matches(text, candidates, n=5, cutoff=0.5)
        hint = f"; closest: {', '.join(close)}" if close else (" (the store is empty)" if not candidates else "")
        raise InputError(f"no run {text!r} in {self.path}{hint} (see `interp runs list`)")

    # --- save --------------------------------------------------------------------------
    def save(self, result: Result, *, saved_from: str = "python", label: str | None = None) -> str:
        """Saves ``result``; returns its id (also set on ``result.id``)."""
        if not isinstance(result, Result):
            raise InputError(f"runs.save takes an interp.runs.Result, got {type(result).__name__}")
        if result.provenance is None:
            raise InputError("this result has no provenance: make it with interp.runs.run(analysis, ...)")
        _check_columns(result.frame)
        if label is not None and (not isinstance(label, str) or len(label) > 500):
            raise InputError("a run's label is a string of at most 500 characters")
        if not isinstance(saved_from, str) or not re.fullmatch(r"[a-z][a-z0-9_-]{0,39}", saved_from):
            raise InputError(f"saved_from names the face that saved the run (python, cli, app ...), got {saved_from!r}")
        saved = _now()
        base = _row_of_result(result, saved=saved, saved_from=saved_from, label=label)
        # one catalog session (the lock held throughout): the row marked saving is committed
        # first, so a process killed while writing leaves it for the next access to mark failed
        with self.catalog() as con:
            for _ in range(20):
                rid = f"{saved:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
                if (
                    con.execute("SELECT 1 FROM runs WHERE id = ?", [rid]).fetchone() is None
                    and not (self.data / rid).exists()
                ):
                    break
            row = {**base, "id": rid, "status": "saving", "pid": os.getpid(), "host": socket.gethostname()}
            con.execute(f"INSERT INTO runs ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", list(row.values()))
            tmp = self.tmp / f"{rid}.{os.getpid()}"
            try:
                doc = self._write(result, rid, tmp, saved=saved, saved_from=saved_from, label=label)
            except BaseException as e:  # KeyboardInterrupt too: never leave half a run
                shutil.rmtree(tmp, ignore_errors=True)
                full = _disk_full(e)
                why = "the disk is full: nothing was written" if full else _one_line(e)
                with contextlib.suppress(Exception):  # else the next access marks it failed
                    con.execute("UPDATE runs SET status = 'failed', error = ? WHERE id = ?", [why, rid])
                if full:
                    raise SetupError(
                        f"could not save the run: the disk holding {self.path} is full; nothing was written"
                    ) from None
                raise
            self._update(con, {**_row_of(doc, len(result.frame)), "status": "ok"})
        result.id = rid
        return rid

    def _write(self, result: Result, rid: str, tmp: Path, *, saved: dt.datetime, saved_from: str, label) -> dict:
        """Writes the run's two files into ``tmp`` (fsynced), then renames ``tmp`` to ``data/<rid>``."""
        tmp.mkdir(parents=True)
        json_columns = write_frame(result.frame, tmp / "frame.parquet")
        assert result.provenance is not None
        doc = {
            "format": FORMAT,
            "version": VERSION,
            "id": rid,
            "saved": saved.isoformat(timespec="seconds"),
            "saved_from": saved_from,
            "label": label,
            "interp": _interp_version(),
            "columns": [str(c) for c in result.frame.columns],
            "json_columns": json_columns,
            "meta": encode(result.meta),
            "provenance": result.provenance.to_dict(),
            "figure": result.figure.to_dict() if result.figure is not None else None,
        }
        write_json(tmp / "run.json", doc)
        _fsync_dir(tmp)
        os.rename(tmp, self.data / rid)  # the run appears whole or not at all
        _fsync_dir(self.data)
        return doc

    # --- read --------------------------------------------------------------------------
    def load(self, run_id: str) -> Result:
        rid = self.resolve(run_id)
        folder = self.data / rid
        doc = _read_doc(folder / "run.json", rid)
        frame = read_frame(folder / "frame.parquet", doc.get("json_columns") or [], rid)
        return Result(
            frame,
            decode(doc.get("meta") or {}),
            Provenance.from_dict(doc.get("provenance")),
            FigureSpec.from_dict(doc.get("figure")),
            id=rid,
        )

    def list_runs(
        self,
        *,
        model: str | None = None,
        analysis: str | None = None,
        since: str | dt.date | dt.datetime | None = None,
        until: str | dt.date | dt.datetime | None = None,
        status: str | None = "ok",
        saved_from: str | None = None,
        limit: int | None = None,
    ) -> pd.DataFrame:
        where: list[str] = []
        params: list[Any] = []
        for col, value in (("model", model), ("analysis", analysis), ("saved_from", saved_from)):
            if value:
                where.append(f"{col} = ?")
                params.append(str(value))
        if status not in (None, "all"):
            if status not in STATUSES:
                raise InputError(f"status must be one of {STATUSES} or 'all', got {status!r}")
            where.append("status = ?")
            params.append(status)
        for op, when, name in ((">=", since, "since"), ("<", until, "until")):
            if when is not None:
                where.append(f"saved {op} ?")
                params.append(_as_time(when, name, end=name == "until"))
        sql = f"SELECT {', '.join(LISTED)} FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY saved DESC, id DESC"
        if limit is not None:
            if int(limit) < 1:
                raise InputError(f"limit must be a positive integer, got {limit}")
            sql += f" LIMIT {int(limit)}"
        with self.catalog() as con:
            return con.execute(sql, params).df()

    def sql(self, query: str, params: list | None = None) -> pd.DataFrame:
        """Runs a read-only SQL query on the catalog (tables ``runs``, ``store_info``; table
        macros ``run_frame(id)`` and ``frames()``)."""
        import duckdb

        if not isinstance(query, str) or not query.strip():
            raise InputError("give a SQL query, e.g. SELECT analysis, count(*) FROM runs GROUP BY analysis")
        with self.locked():
            with self.catalog():
                pass  # created, checked and up to date
            con = duckdb.connect(str(self.catalog_path), read_only=True)
            try:
                return con.execute(query, params or []).df()
            except duckdb.Error as e:
                raise InputError(f"SQL error: {_one_line(e)}") from None
            finally:
                con.close()

    # --- remove and export -------------------------------------------------------------
    def rm(self, run_id: str) -> str:
        """Removes a run (its files and its catalog row), or a failed save's row; returns its id."""
        text = str(run_id).strip()
        with self.catalog() as con:
            row = con.execute("SELECT status FROM runs WHERE id = ?", [text]).fetchone() if ID_RE.match(text) else None
        rid = text if row is not None and row[0] != "ok" else self.resolve(text)
        with self.catalog() as con:
            folder = self.data / rid
            if folder.exists():
                trash = self.tmp / f"{rid}.rm.{os.getpid()}"
                os.rename(folder, trash)  # gone from data/ in one step
                shutil.rmtree(trash, ignore_errors=True)
            con.execute("DELETE FROM runs WHERE id = ?", [rid])
        return rid

    def export(self, run_id: str, path: str | Path) -> Path:
        """Writes a run to ``path``: ``.parquet`` (the frame, with the run's JSON in the file's
        metadata under ``interp.run``), ``.json`` (everything: frame, meta, provenance, figure)
        or ``.csv`` (the frame only)."""
        path = Path(path).expanduser()
        if path.suffix not in (".parquet", ".json", ".csv"):
            raise InputError(f"export to a .parquet, .json or .csv file, got {path.name!r}")
        if not path.parent.is_dir():
            raise InputError(f"{path.parent} is not a folder")
        result = self.load(run_id)
        folder = self.data / result.id  # type: ignore[operator]
        doc = _read_doc(folder / "run.json", str(result.id))
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            if path.suffix == ".parquet":
                import pyarrow.parquet as pq

                table = pq.read_table(folder / "frame.parquet")
                table = table.replace_schema_metadata(
                    {**(table.schema.metadata or {}), b"interp.run": json.dumps(doc).encode()}
                )
                pq.write_table(table, tmp)
            elif path.suffix == ".csv":
                result.frame.to_csv(tmp, index=False)
            else:
                split = result.frame.to_dict(orient="split")
                tmp.write_text(
                    json.dumps(
                        {**doc, "frame": {"columns": encode(list(split["columns"])), "data": encode(split["data"])}}
                    )
                )
            os.replace(tmp, path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise SetupError(f"could not write {path}: {e.strerror or e}") from None
        return path


class _Corrupt(Exception):
    """The catalog cannot be read (set aside and rebuilt)."""


# --- files ---------------------------------------------------------------------------------


def _interp_version() -> str:
    import interp

    return f"interp {interp.__version__}"


def _check_columns(frame: pd.DataFrame) -> None:
    bad = [c for c in frame.columns if not isinstance(c, str)]
    if bad:
        raise InputError(f"a saved frame needs string column names; rename {bad[:5]} (e.g. frame.columns.astype(str))")
    dup = frame.columns[frame.columns.duplicated()].tolist()
    if dup:
        raise InputError(f"a saved frame needs unique column names; {dup[:5]} repeat")


def _needs_json(col: pd.Series) -> bool:
    """An object column Parquet would not give back as it is (lists, tuples, dicts, mixed types)."""
    import pyarrow as pa

    if col.dtype != object:
        return False
    values = col.dropna()
    if any(isinstance(v, (list, tuple, dict, set)) or hasattr(v, "shape") for v in values):
        return True
    try:
        pa.array(col, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, ValueError, OverflowError):
        return True
    return False


def write_frame(frame: pd.DataFrame, path: Path) -> list[str]:
    """Writes ``frame`` as Parquet (fsynced); returns the columns stored as JSON text."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame = frame.copy(deep=False)
    frame.attrs = {}
    json_columns = [c for c in frame.columns if _needs_json(frame[c])]
    for c in json_columns:
        frame[c] = [None if v is None else json.dumps(encode(v)) for v in frame[c]]
    try:
        table = pa.Table.from_pandas(frame)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as e:
        raise InputError(f"the frame cannot be stored as Parquet: {_one_line(e)}") from None
    with open(path, "wb") as f:
        pq.write_table(table, f)
        f.flush()
        os.fsync(f.fileno())
    return json_columns


def read_frame(path: Path, json_columns: list[str], rid: str = "") -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        frame = pq.read_table(path).to_pandas()
    except (OSError, pa.ArrowException) as e:
        raise InputError(
            f"run {rid}: its frame {path} is unreadable ({_one_line(e)}); remove the run with `interp runs rm {rid}`"
        ) from None
    for c in json_columns:
        if c in frame.columns:
            frame[c] = pd.Series(
                [None if not isinstance(v, str) else decode(json.loads(v)) for v in frame[c]], dtype=object
            )
    return frame


def write_json(path: Path, doc: dict) -> None:
    with open(path, "w") as f:
        json.dump(doc, f, allow_nan=False)
        f.flush()
        os.fsync(f.fileno())


def _read_doc(path: Path, rid: str) -> dict:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"run {rid}: {path} is missing; remove the run with `interp runs rm {rid}`") from None
    except (OSError, ValueError) as e:
        raise InputError(
            f"run {rid}: {path} is unreadable ({_one_line(e)}); remove the run with `interp runs rm {rid}`"
        ) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise InputError(f"run {rid}: {path} is not an interp run file")
    version = doc.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise SetupError(
            f"run {rid} was written by a newer interp (run format {version}, {doc.get('interp', 'unknown version')}); "
            f"this interp ({_interp_version()}) reads formats up to {VERSION}: upgrade interp"
        )
    return doc


def _parquet_rows(path: Path) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return int(pq.read_metadata(path).num_rows)
    except (OSError, pa.ArrowException) as e:
        raise InputError(f"{path} is unreadable ({_one_line(e)})") from None


def _ts(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return t.astimezone(dt.UTC).replace(tzinfo=None) if t.tzinfo else t


def _as_time(value, name: str, end: bool = False) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).replace(tzinfo=None) if value.tzinfo else value
    if isinstance(value, dt.date):
        day = dt.datetime(value.year, value.month, value.day)
        return day + dt.timedelta(days=1) if end else day
    try:
        t = dt.datetime.fromisoformat(str(value))
    except ValueError:
        raise InputError(f"{name} must be a date or time like 2026-12-07 or 2026-12-07T14:00, got {value!r}") from None
    if end and len(str(value)) <= 10:  # a day: up to its end
        t += dt.timedelta(days=1)
    return t.astimezone(dt.UTC).replace(tzinfo=None) if t.tzinfo else t


def _row_of_result(result: Result, *, saved: dt.datetime, saved_from: str, label: str | None) -> dict:
    p = result.provenance
    assert p is not None
    return {
        "saved": saved,
        "saved_from": saved_from,
        "label": label,
        **_provenance_fields(p),
        "n_rows": len(result.frame),
        "columns": [str(c) for c in result.frame.columns],
        "meta": json.dumps(encode(result.meta), allow_nan=False),
        "arguments": json.dumps(p.arguments, allow_nan=False, default=str),
    }


def _provenance_fields(p: Provenance) -> dict:
    """The catalog columns read from a run's provenance."""
    model = p.model or {}
    return {
        "analysis": p.analysis,
        "function": p.function,
        "model": model.get("name"),
        "model_sha256": model.get("sha256"),
        "family": model.get("family"),
        "started": _ts(p.started),
        "wall_seconds": p.wall_seconds,
        "interp_version": (p.versions or {}).get("interp"),
        "git_commit": (p.git or {}).get("commit"),
        "device": p.device,
        "dtype": p.dtype,
    }


def _row_of(doc: dict, n_rows: int) -> dict:
    """A complete catalog row (status ok) from a run file."""
    p = Provenance.from_dict(doc.get("provenance")) or Provenance("?", "?")
    return {
        "id": doc["id"],
        "status": "ok",
        "error": None,
        "saved": _ts(doc.get("saved")),
        "saved_from": doc.get("saved_from"),
        "label": doc.get("label"),
        **_provenance_fields(p),
        "n_rows": n_rows,
        "columns": doc.get("columns"),
        "meta": json.dumps(doc.get("meta") or {}),
        "arguments": json.dumps(p.arguments or {}, default=str),
    }
