"""SQLite storage for a reader study: items, readers, each reader's order, answers.

One file, ``STUDY/study.sqlite``, in WAL mode with ``synchronous=FULL``: every write is a single
``BEGIN IMMEDIATE ... COMMIT`` transaction, so an answer is on disk once the request returns and a
crash or restart never leaves half a reader or half an answer behind. Every connection is
short-lived and used by one thread (one per web request).
"""
from __future__ import annotations

import contextlib
import datetime
import os
import re
import secrets
import sqlite3
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

SCHEMA_VERSION = 1
DB_NAME = "study.sqlite"
IMAGES_DIR = "images"
TRUTHS = ("real", "synthetic")
ITEM_ID_RE = re.compile(r"^[0-9a-f]{16}$")  # secrets.token_hex(8)
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")  # secrets.token_urlsafe(32): 32 random bytes
MAX_NAME_CHARS = 100
MAX_FINDING_CHARS = 2000

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE items (
  id TEXT PRIMARY KEY,
  position INTEGER NOT NULL UNIQUE,          -- order in the study (seeded shuffle)
  truth TEXT NOT NULL CHECK (truth IN ('real', 'synthetic')),
  source TEXT NOT NULL,                      -- original file (or samples.npz#index), admin only
  label TEXT,                                -- class / finding label, NULL when unknown
  filename TEXT NOT NULL UNIQUE,             -- file name under images/
  width INTEGER NOT NULL,
  height INTEGER NOT NULL
);
CREATE TABLE readers (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  token TEXT NOT NULL UNIQUE,
  created_at TEXT NOT NULL
);
CREATE TABLE reader_items (                  -- each reader's own seeded order of all items
  reader_id INTEGER NOT NULL REFERENCES readers(id),
  position INTEGER NOT NULL,
  item_id TEXT NOT NULL REFERENCES items(id),
  PRIMARY KEY (reader_id, position),
  UNIQUE (reader_id, item_id)
);
CREATE TABLE answers (
  reader_id INTEGER NOT NULL REFERENCES readers(id),
  item_id TEXT NOT NULL REFERENCES items(id),
  answer TEXT NOT NULL CHECK (answer IN ('real', 'synthetic')),
  confidence INTEGER CHECK (confidence BETWEEN 1 AND 5),
  finding TEXT NOT NULL DEFAULT '',
  answered_at TEXT NOT NULL,
  PRIMARY KEY (reader_id, item_id),
  FOREIGN KEY (reader_id, item_id) REFERENCES reader_items(reader_id, item_id)
);
"""


class AnswerConflict(Exception):
    """The item already has a different answer from this reader (answers are final)."""


def now() -> str:
    """UTC timestamp, ISO 8601 with seconds."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def connect(path: str) -> sqlite3.Connection:
    """Opens an existing study database (autocommit; writes go through `transaction`)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Reader-study database {path!r} not found; create the study with "
                                "`jaxmedgan reader-study create`.")
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=True)
    conn.row_factory = sqlite3.Row
    try:
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = FULL")  # WAL + FULL: a committed answer survives power loss
        conn.execute("PRAGMA busy_timeout = 30000")
    except sqlite3.DatabaseError as e:
        conn.close()
        raise ValueError(f"{path!r} is not a reader-study database: {e}") from None
    return conn


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception: all of a write or none of it."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def create(path: str, items: Iterable[dict[str, Any]], meta: dict[str, str]) -> None:
    """Writes a new database at `path` (must not exist) with the items and metadata, in WAL mode."""
    if os.path.exists(path):
        raise FileExistsError(f"Reader-study database {path!r} already exists.")
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")  # persistent: stored in the file
        conn.execute("PRAGMA foreign_keys = ON")
        with transaction(conn):
            for statement in _SCHEMA.split(";"):  # not executescript: it would COMMIT first
                if statement.strip():
                    conn.execute(statement)
            conn.executemany(
                "INSERT INTO items (id, position, truth, source, label, filename, width, height) "
                "VALUES (:id, :position, :truth, :source, :label, :filename, :width, :height)", list(items))
            all_meta = {"schema_version": str(SCHEMA_VERSION), "admin_token": secrets.token_urlsafe(32),
                        "created_at": now(), **meta}
            conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", sorted(all_meta.items()))
    finally:
        conn.close()


def open_study(path: str) -> sqlite3.Connection:
    """`connect`, then checks that this is a reader-study database of a known schema version."""
    conn = connect(path)
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.DatabaseError as e:
        conn.close()
        raise ValueError(f"{path!r} is not a reader-study database: {e}") from None
    if row is None or row["value"] != str(SCHEMA_VERSION):
        conn.close()
        raise ValueError(f"{path!r} has reader-study schema version {row and row['value']!r}; this "
                         f"jaxmedgan reads version {SCHEMA_VERSION}.")
    return conn


def meta(conn: sqlite3.Connection) -> dict[str, str]:
    """All metadata (admin_token, seed, created_at, ...)."""
    return {r["key"]: r["value"] for r in conn.execute("SELECT key, value FROM meta")}


def num_items(conn: sqlite3.Connection) -> int:
    """Number of images in the study."""
    return conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]


def add_reader(conn: sqlite3.Connection, name: str) -> tuple[int, str]:
    """Creates a reader with a fresh token and their own seeded item order; returns (id, token)."""
    token = secrets.token_urlsafe(32)
    seed = int(meta(conn).get("seed", "0"))
    with transaction(conn):
        cur = conn.execute("INSERT INTO readers (name, token, created_at) VALUES (?, ?, ?)",
                           (name, token, now()))
        reader_id = cur.lastrowid
        ids = [r["id"] for r in conn.execute("SELECT id FROM items ORDER BY position")]
        order = np.random.default_rng([seed, reader_id]).permutation(len(ids))
        conn.executemany("INSERT INTO reader_items (reader_id, position, item_id) VALUES (?, ?, ?)",
                         [(reader_id, k, ids[int(i)]) for k, i in enumerate(order)])
    return reader_id, token


def reader_by_token(conn: sqlite3.Connection, token: str) -> sqlite3.Row | None:
    """The reader with this token, or None (also for strings that cannot be a token)."""
    if not isinstance(token, str) or not TOKEN_RE.match(token):
        return None
    return conn.execute("SELECT id, name, token, created_at FROM readers WHERE token = ?", (token,)).fetchone()


def readers(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    """All readers with their number of answers, oldest first."""
    return conn.execute(
        "SELECT r.id, r.name, r.token, r.created_at, COUNT(a.item_id) AS answered "
        "FROM readers r LEFT JOIN answers a ON a.reader_id = r.id GROUP BY r.id ORDER BY r.id").fetchall()


def progress(conn: sqlite3.Connection, reader_id: int) -> tuple[int, int]:
    """(answered, total) for a reader."""
    answered = conn.execute("SELECT COUNT(*) FROM answers WHERE reader_id = ?", (reader_id,)).fetchone()[0]
    total = conn.execute("SELECT COUNT(*) FROM reader_items WHERE reader_id = ?", (reader_id,)).fetchone()[0]
    return answered, total


def next_item(conn: sqlite3.Connection, reader_id: int) -> sqlite3.Row | None:
    """The reader's first unanswered item in their own order (id, position), or None when done."""
    return conn.execute(
        "SELECT ri.item_id AS id, ri.position FROM reader_items ri "
        "LEFT JOIN answers a ON a.reader_id = ri.reader_id AND a.item_id = ri.item_id "
        "WHERE ri.reader_id = ? AND a.item_id IS NULL ORDER BY ri.position LIMIT 1", (reader_id,)).fetchone()


def assigned_item(conn: sqlite3.Connection, reader_id: int, item_id: str) -> sqlite3.Row | None:
    """The item (id, filename) if `item_id` is well-formed and assigned to this reader, else None."""
    if not isinstance(item_id, str) or not ITEM_ID_RE.match(item_id):
        return None
    return conn.execute(
        "SELECT i.id, i.filename FROM reader_items ri JOIN items i ON i.id = ri.item_id "
        "WHERE ri.reader_id = ? AND ri.item_id = ?", (reader_id, item_id)).fetchone()


def save_answer(conn: sqlite3.Connection, reader_id: int, item_id: str, answer: str,
                confidence: int | None, finding: str) -> bool:
    """Stores an answer; True if new, False if the identical answer was already stored.

    Answers are final: a different answer for an already answered item raises AnswerConflict
    (a resubmitted form — double click, browser retry — is the identical answer and is accepted).
    """
    if answer not in TRUTHS:
        raise ValueError(f"answer must be one of {TRUTHS}, got {answer!r}")
    with transaction(conn):
        old = conn.execute("SELECT answer, confidence, finding FROM answers WHERE reader_id = ? AND item_id = ?",
                           (reader_id, item_id)).fetchone()
        if old is not None:
            if (old["answer"], old["confidence"], old["finding"]) == (answer, confidence, finding):
                return False
            raise AnswerConflict(f"item {item_id} already answered {old['answer']!r}; answers are final")
        conn.execute("INSERT INTO answers (reader_id, item_id, answer, confidence, finding, answered_at) "
                     "VALUES (?, ?, ?, ?, ?, ?)", (reader_id, item_id, answer, confidence, finding, now()))
    return True


def items(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    """All items in study order."""
    return conn.execute("SELECT id, position, truth, source, label, filename, width, height FROM items "
                        "ORDER BY position").fetchall()


def answers(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    """Every answer joined with its reader and item, by reader then the reader's order."""
    return conn.execute(
        "SELECT r.id AS reader_id, r.name AS reader, ri.position AS reader_position, a.item_id, i.truth, "
        "a.answer, a.confidence, a.finding, i.label, i.source, a.answered_at "
        "FROM answers a JOIN readers r ON r.id = a.reader_id JOIN items i ON i.id = a.item_id "
        "JOIN reader_items ri ON ri.reader_id = a.reader_id AND ri.item_id = a.item_id "
        "ORDER BY r.id, ri.position").fetchall()
