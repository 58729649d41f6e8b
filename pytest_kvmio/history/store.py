"""Where the results history lives: SQLite (`sqlite:///PATH`, one machine) or PostgreSQL (`postgresql://…`, a team).

One table, `kvmio_history_points`, one row per point; the series key (host, target, profile, metric) plus the
point's digest is unique, and points are added with "insert, or nothing when it is there", so importing the same
results twice adds nothing and several writers at once (xdist workers, parallel pipelines) lose nothing: SQLite
serialises writers (WAL journal, a busy timeout), PostgreSQL's unique index decides between concurrent inserts.
PostgreSQL needs psycopg 3 (`pip install 'psycopg[binary]'`), imported only when such a URL is used.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from pytest_kvmio.history.series import Point
from pytest_kvmio.model.redact import redact_uri
from pytest_kvmio.settings import history_url

TABLE = "kvmio_history_points"
COLUMNS = ("host", "target", "profile", "metric", "run", "time", "value", "samples", "source", "fingerprint", "ci",
           "digest")
#: Seconds a writer waits for another one's transaction (SQLite) or for a connection (PostgreSQL).
WAIT_SECONDS = 60
#: PostgreSQL: the advisory lock that serialises creating the table (concurrent CREATE ... IF NOT EXISTS can clash).
_SCHEMA_LOCK = 0x6B766D696F  # "kvmio"


class HistoryError(Exception):
    """The history store can't be used: a bad URL, an unreachable database, a missing driver; says how to fix it."""


def check_url(url: str) -> str:
    """Return the URL if kvmio can use it, else raise ValueError saying what is wrong (the setting's validator)."""
    return history_url(url)


def sqlite_path(url: str) -> str:
    """Return the file of a sqlite:/// URL: `sqlite:///h.db` is relative, `sqlite:////tmp/h.db` absolute."""
    return url.removeprefix("sqlite:///")


class Store(Protocol):
    def add(self, points: Sequence[Point]) -> int: ...
    def points(self, **where: str | None) -> list[Point]: ...
    def close(self) -> None: ...


def open_store(url: str) -> Store:
    """Open (and create when missing) the store a URL names; HistoryError says what went wrong and how to fix it."""
    try:
        url = check_url(url)
    except ValueError as exc:
        raise HistoryError(str(exc)) from None
    if url.startswith("sqlite:"):
        return SqliteStore(sqlite_path(url))
    return PostgresStore(url)


def _row(point: Point) -> tuple[Any, ...]:
    return (point.host, point.target, point.profile, point.metric, point.run, point.time, point.value,
            json.dumps(list(point.samples)), point.source, json.dumps(dict(point.fingerprint), sort_keys=True),
            json.dumps(dict(point.ci), sort_keys=True), point.digest)


def _point(row: Sequence[Any]) -> Point:
    values = dict(zip(COLUMNS, row))
    return Point(
        host=values["host"], target=values["target"], profile=values["profile"], metric=values["metric"],
        run=values["run"], time=values["time"], value=float(values["value"]),
        samples=tuple(json.loads(values["samples"])), source=values["source"],
        fingerprint=json.loads(values["fingerprint"]), ci=json.loads(values["ci"]), digest=values["digest"],
    )


_KEYS = ("host", "target", "profile", "metric")


def _select(where: dict[str, str | None], mark: str) -> tuple[str, list[str]]:
    """Return the query of the points whose series-key columns equal the given values (None: any), with its values."""
    unknown = set(where) - set(_KEYS)
    if unknown:
        raise TypeError(f"points() filters by {', '.join(_KEYS)}, not {', '.join(sorted(unknown))}")
    given = [(k, v) for k, v in where.items() if v is not None]
    clause = " AND ".join(f"{k} = {mark}" for k, _ in given)
    query = f"SELECT {', '.join(COLUMNS)} FROM {TABLE}" + (f" WHERE {clause}" if clause else "")
    return query + " ORDER BY id", [v for _, v in given]


class SqliteStore:
    """The embedded store: one SQLite file."""

    def __init__(self, path: str) -> None:
        self.path = path
        parent = Path(path).resolve().parent
        if not parent.is_dir():
            raise HistoryError(f"sqlite:///{path}: the directory {parent} does not exist; create it or name another file")
        try:
            self.db = sqlite3.connect(path, timeout=WAIT_SECONDS, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(f"PRAGMA busy_timeout={WAIT_SECONDS * 1000}")
            with self._transaction():
                self.db.execute(
                    f"CREATE TABLE IF NOT EXISTS {TABLE} (id INTEGER PRIMARY KEY AUTOINCREMENT, host TEXT NOT NULL, "
                    "target TEXT NOT NULL, profile TEXT NOT NULL, metric TEXT NOT NULL, run TEXT NOT NULL, "
                    "time TEXT NOT NULL, value REAL NOT NULL, samples TEXT NOT NULL, source TEXT NOT NULL, "
                    "fingerprint TEXT NOT NULL, ci TEXT NOT NULL, digest TEXT NOT NULL, "
                    "UNIQUE (host, target, profile, metric, digest))"
                )
        except sqlite3.DatabaseError as exc:
            raise HistoryError(f"sqlite:///{path}: {exc}; is it a kvmio history file (or another SQLite database)?") from None

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self.db.execute("BEGIN IMMEDIATE")  # the write lock up front: no upgrade deadlock between two writers
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def add(self, points: Sequence[Point]) -> int:
        """Add the points that are not there yet; return how many were added."""
        if not points:
            return 0
        try:
            with self._transaction():
                before = self.db.total_changes
                self.db.executemany(
                    f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))}) "
                    "ON CONFLICT DO NOTHING", [_row(p) for p in points],
                )
                return self.db.total_changes - before
        except sqlite3.DatabaseError as exc:
            raise HistoryError(f"sqlite:///{self.path}: cannot add points: {exc}") from None

    def points(self, **where: str | None) -> list[Point]:
        """Return the points (of one host, target, profile or metric where given)."""
        query, values = _select(where, "?")
        try:
            return [_point(row) for row in self.db.execute(query, values)]
        except sqlite3.DatabaseError as exc:
            raise HistoryError(f"sqlite:///{self.path}: cannot read points: {exc}") from None

    def close(self) -> None:
        self.db.close()


class PostgresStore:
    """A team's shared store on PostgreSQL (psycopg 3)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.shown = redact_uri(url)
        try:
            import psycopg  # only for postgresql:// URLs: SQLite users need no driver
        except ImportError:
            raise HistoryError(
                f"{self.shown}: PostgreSQL needs psycopg 3; pip install 'psycopg[binary]' (or apt install python3-psycopg)"
            ) from None
        self._errors = psycopg.Error
        try:
            self.db = psycopg.connect(url, connect_timeout=WAIT_SECONDS, autocommit=False)
        except psycopg.Error as exc:
            reason = " ".join(str(exc).split())
            raise HistoryError(
                f"{self.shown}: cannot connect: {reason}; check that the server runs and the URL's host, port, user "
                "and database"
            ) from None
        try:
            with self.db.transaction():
                self.db.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                self.db.execute(
                    f"CREATE TABLE IF NOT EXISTS {TABLE} (id BIGSERIAL PRIMARY KEY, host TEXT NOT NULL, "
                    "target TEXT NOT NULL, profile TEXT NOT NULL, metric TEXT NOT NULL, run TEXT NOT NULL, "
                    "time TEXT NOT NULL, value DOUBLE PRECISION NOT NULL, samples TEXT NOT NULL, "
                    "source TEXT NOT NULL, fingerprint TEXT NOT NULL, ci TEXT NOT NULL, digest TEXT NOT NULL, "
                    "UNIQUE (host, target, profile, metric, digest))"
                )
        except psycopg.Error as exc:
            raise HistoryError(f"{self.shown}: cannot create table {TABLE}: {' '.join(str(exc).split())}") from None

    def add(self, points: Sequence[Point]) -> int:
        """Add the points that are not there yet; return how many were added."""
        if not points:
            return 0
        added = 0
        try:
            with self.db.transaction(), self.db.cursor() as cursor:
                for point in points:
                    cursor.execute(
                        f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * len(COLUMNS))}) "
                        "ON CONFLICT DO NOTHING", _row(point),
                    )
                    added += cursor.rowcount
        except self._errors as exc:
            raise HistoryError(f"{self.shown}: cannot add points: {' '.join(str(exc).split())}") from None
        return added

    def points(self, **where: str | None) -> list[Point]:
        """Return the points (of one host, target, profile or metric where given)."""
        query, values = _select(where, "%s")
        try:
            with self.db.transaction():
                rows = self.db.execute(query, values).fetchall()
        except self._errors as exc:
            raise HistoryError(f"{self.shown}: cannot read points: {' '.join(str(exc).split())}") from None
        return [_point(row) for row in rows]

    def close(self) -> None:
        self.db.close()
