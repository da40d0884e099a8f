"""The run store: one SQLite file with one row per fine-tuning run (no torch).

Tables
------
``runs``
    One row per run, keyed by :func:`run_key` (source identity incl. weights/checkpoint
    sha256, target data sha256, every hyper-parameter, seed, protocol version): the names,
    every hyper-parameter, status (``running`` / ``finished`` / ``failed``), epochs run, stop
    reason, best epoch, val/test AUC, loss and accuracy, wall time, seed, device and the
    package/torch/torchvision/numpy/Python versions, plus the whole config as JSON.
``epochs``
    Per-epoch metrics of each run (train loss, val loss/AUC/accuracy, learning rate, seconds).
``predictions``
    The labels and class scores of the best-validation weights on val and test (``.npy``
    bytes), from which the stored AUCs can be recomputed.
``replicates`` (schema 2, created by the first ``finetune --seeds``)
    Seed replicates of a pair's selected configuration: per (selected run, seed) the run key
    of the replicate, the pair's names and the whole seed list asked for (JSON). The selected
    run itself is the replicate of its own seed. A store without replicates stays schema 1.

Every write is one transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``, SQLite's rollback journal):
a process killed mid-write leaves the previous state. A run is ``running`` from its start until
its result is committed, so a run that was in flight when a grid was killed is redone on resume,
and a ``finished`` run is never redone.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence, Union

import numpy as np
from numpy.typing import NDArray

from ..errors import InputError

PathLike = Union[str, "os.PathLike[str]"]

#: ``PRAGMA application_id`` of a run store ("gNCA"), so a foreign SQLite file is recognised.
APPLICATION_ID = 0x674E4341
SCHEMA_VERSION = 2
#: Schema 1 = runs, epochs, predictions; schema 2 adds the ``replicates`` table (additive: a
#: schema-1 store is read unchanged and becomes schema 2 when replicates are first recorded).
REPLICATE_SCHEMA_VERSION = 2

RUN_COLUMNS: tuple[tuple[str, str], ...] = (
    ("run_key", "TEXT PRIMARY KEY"),
    ("status", "TEXT NOT NULL CHECK (status IN ('running', 'finished', 'failed'))"),
    ("source", "TEXT NOT NULL"),
    ("source_kind", "TEXT"),
    ("source_reference", "TEXT"),
    ("source_sha256", "TEXT NOT NULL"),
    ("checkpoint_sha256", "TEXT"),
    ("target", "TEXT NOT NULL"),
    ("target_path", "TEXT"),
    ("target_sha256", "TEXT NOT NULL"),
    ("task", "TEXT"),
    ("n_classes", "INTEGER"),
    ("n_train", "INTEGER"),
    ("n_val", "INTEGER"),
    ("n_test", "INTEGER"),
    ("grid", "TEXT"),
    ("lr", "REAL NOT NULL"),
    ("weight_decay", "REAL NOT NULL"),
    ("momentum", "REAL NOT NULL"),
    ("nesterov", "INTEGER NOT NULL"),
    ("batch_size", "INTEGER NOT NULL"),
    ("max_epochs", "INTEGER NOT NULL"),
    ("patience", "INTEGER NOT NULL"),
    ("image_size", "INTEGER NOT NULL"),
    ("dropout", "REAL NOT NULL"),
    ("augment", "INTEGER NOT NULL"),
    ("resize_filter", "TEXT NOT NULL"),
    ("seed", "INTEGER NOT NULL"),
    ("epochs_run", "INTEGER"),
    ("best_epoch", "INTEGER"),
    ("stop_reason", "TEXT"),
    ("val_auc", "REAL"),
    ("val_loss", "REAL"),
    ("val_acc", "REAL"),
    ("test_auc", "REAL"),
    ("test_loss", "REAL"),
    ("test_acc", "REAL"),
    ("wall_time_s", "REAL"),
    ("device", "TEXT"),
    ("attempts", "INTEGER NOT NULL DEFAULT 0"),
    ("started_at", "TEXT"),
    ("finished_at", "TEXT"),
    ("package_version", "TEXT"),
    ("torch_version", "TEXT"),
    ("torchvision_version", "TEXT"),
    ("numpy_version", "TEXT"),
    ("python_version", "TEXT"),
    ("config_json", "TEXT NOT NULL"),
    ("error", "TEXT"),
)
EPOCH_COLUMNS = ("epoch", "train_loss", "val_loss", "val_auc", "val_acc", "lr", "seconds")
RESULT_FIELDS = ("epochs_run", "best_epoch", "stop_reason", "val_auc", "val_loss", "val_acc",
                 "test_auc", "test_loss", "test_acc", "wall_time_s")

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS runs ({', '.join(f'{n} {t}' for n, t in RUN_COLUMNS)});
CREATE TABLE IF NOT EXISTS epochs (
    run_key TEXT NOT NULL REFERENCES runs(run_key) ON DELETE CASCADE,
    epoch INTEGER NOT NULL, train_loss REAL, val_loss REAL, val_auc REAL, val_acc REAL,
    lr REAL, seconds REAL, PRIMARY KEY (run_key, epoch));
CREATE TABLE IF NOT EXISTS predictions (
    run_key TEXT NOT NULL REFERENCES runs(run_key) ON DELETE CASCADE,
    split TEXT NOT NULL, labels BLOB NOT NULL, scores BLOB NOT NULL,
    PRIMARY KEY (run_key, split));
CREATE INDEX IF NOT EXISTS runs_pair ON runs (source, target, status);
"""

REPLICATE_COLUMNS = ("selected_key", "seed", "run_key", "source", "target", "seeds_json",
                     "created")
_REPLICATE_SCHEMA = """
CREATE TABLE IF NOT EXISTS replicates (
    selected_key TEXT NOT NULL, seed INTEGER NOT NULL, run_key TEXT NOT NULL,
    source TEXT NOT NULL, target TEXT NOT NULL, seeds_json TEXT NOT NULL, created TEXT,
    PRIMARY KEY (selected_key, seed))
"""


def run_key(source: Mapping[str, Any], target: Mapping[str, Any], config: Mapping[str, Any],
            protocol: str) -> str:
    """sha256 of the canonical JSON of what determines a run's result.

    ``source``: identity of the weights (kind, reference, weights/checkpoint sha256,
    normalisation, channels, head); ``target``: the data sha256s; ``config``: every
    hyper-parameter and the seed. Names and paths are left out, so renaming or moving a file
    does not redo a run.
    """
    blob = json.dumps({"protocol": protocol, "source": source, "target": target,
                       "config": config}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def _npy_bytes(array: NDArray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _nan_to_none(v: Any) -> Any:
    if isinstance(v, float) and v != v:
        return None
    return v


class RunStore:
    """A fine-tuning run store in one SQLite file (created when missing).

    Parameters
    ----------
    path : str or path-like
    timeout : float
        Seconds to wait for another process's write lock (several workers may share a store).

    Raises
    ------
    ValueError
        The file is not SQLite, or is a SQLite database of something else, or cannot be
        created.
    """

    def __init__(self, path: PathLike, *, timeout: float = 60.0) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise InputError(f"run store {self.path} is a directory; give a file such as runs.sqlite")
        if not self.path.parent.is_dir():
            raise InputError(f"run store {self.path}: folder {self.path.parent} does not exist")
        try:
            self._db = sqlite3.connect(str(self.path), timeout=timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise InputError(f"run store {self.path} cannot be opened ({exc})") from None
        try:
            self._init_schema()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise InputError(
                f"run store {self.path} is not a SQLite database ({exc}); give a new file name "
                "or an existing run store"
            ) from None

    # ------------------------------------------------------------------ plumbing

    def _init_schema(self) -> None:
        db = self._db
        db.execute("PRAGMA foreign_keys = ON")
        app = db.execute("PRAGMA application_id").fetchone()[0]
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        if app != APPLICATION_ID:
            if tables:
                raise InputError(
                    f"run store {self.path} is a SQLite database of something else (tables "
                    f"{tables[:5]}); give a new file name or an existing run store"
                )
            with self.transaction():
                db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                db.execute("PRAGMA user_version = 1")
                # Statement by statement: executescript would commit the open transaction.
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise InputError(f"run store {self.path} has schema version {version}; this "
                             f"gradnca-onnx reads up to {SCHEMA_VERSION}: upgrade the package")

    class _Tx:
        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db

        def __enter__(self) -> sqlite3.Connection:
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, exc_type: Any, *_: Any) -> None:
            self.db.execute("ROLLBACK" if exc_type else "COMMIT")

    def transaction(self) -> "RunStore._Tx":
        """``with store.transaction() as db:`` — one atomic write (rolled back on error)."""
        return RunStore._Tx(self._db)

    def close(self) -> None:
        """Close the database connection."""
        self._db.close()

    def __enter__(self) -> "RunStore":
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ writes

    def start_run(self, key: str, row: Mapping[str, Any]) -> None:
        """Mark run ``key`` as running (a fresh attempt): its old epochs and predictions go.

        ``row`` holds the static columns (names, ids, hyper-parameters, versions, config JSON).
        """
        names = [n for n, _ in RUN_COLUMNS]
        unknown = set(row) - set(names)
        if unknown:
            raise InputError(f"unknown run column(s) {sorted(unknown)}")
        with self.transaction() as db:
            old = db.execute("SELECT attempts FROM runs WHERE run_key = ?", (key,)).fetchone()
            values = {n: None for n in names}
            values.update(row)
            values.update(run_key=key, status="running", started_at=_now(), finished_at=None,
                          attempts=(old[0] if old else 0) + 1, error=None)
            for f in RESULT_FIELDS:
                values[f] = None
            db.execute("DELETE FROM epochs WHERE run_key = ?", (key,))
            db.execute("DELETE FROM predictions WHERE run_key = ?", (key,))
            db.execute(f"INSERT OR REPLACE INTO runs ({', '.join(names)}) VALUES "
                       f"({', '.join('?' for _ in names)})", [values[n] for n in names])

    def record_replicates(self, selected_key: str, seeds: Sequence[int],
                          run_keys: Sequence[str], *, source: str, target: str) -> None:
        """Record the seed replicates of a selected run (before they run; idempotent).

        Parameters
        ----------
        selected_key : run key of the pair's selected (lowest validation loss) grid run
        seeds : the seed list asked for, in order
        run_keys : the run key of each seed's replicate (the selected key for its own seed)
        source, target : the pair's names

        The first call on a schema-1 store adds the ``replicates`` table and marks the store
        schema 2 (in the same transaction).
        """
        if len(seeds) != len(run_keys):
            raise InputError("record_replicates: one run key per seed is needed")
        seeds_json = json.dumps([int(s) for s in seeds])
        with self.transaction() as db:
            db.execute(_REPLICATE_SCHEMA)
            if db.execute("PRAGMA user_version").fetchone()[0] < REPLICATE_SCHEMA_VERSION:
                db.execute(f"PRAGMA user_version = {REPLICATE_SCHEMA_VERSION}")
            for seed, key in zip(seeds, run_keys):
                db.execute(f"INSERT OR REPLACE INTO replicates ({', '.join(REPLICATE_COLUMNS)}) "
                           f"VALUES ({', '.join('?' for _ in REPLICATE_COLUMNS)})",
                           (selected_key, int(seed), key, source, target, seeds_json, _now()))

    def log_epoch(self, key: str, metrics: Mapping[str, Any]) -> None:
        """Record one epoch's metrics of a running run."""
        with self.transaction() as db:
            db.execute(f"INSERT OR REPLACE INTO epochs (run_key, {', '.join(EPOCH_COLUMNS)}) "
                       f"VALUES (?, {', '.join('?' for _ in EPOCH_COLUMNS)})",
                       [key, *(_nan_to_none(metrics.get(c)) for c in EPOCH_COLUMNS)])

    def finish_run(self, key: str, result: Mapping[str, Any],
                   predictions: Mapping[str, tuple[NDArray, NDArray]]) -> None:
        """Store a run's result and predictions and mark it finished, in one transaction."""
        with self.transaction() as db:
            sets = ", ".join(f"{f} = ?" for f in RESULT_FIELDS)
            cur = db.execute(
                f"UPDATE runs SET {sets}, status = 'finished', finished_at = ? WHERE run_key = ?",
                [*(_nan_to_none(result.get(f)) for f in RESULT_FIELDS), _now(), key])
            if cur.rowcount != 1:
                raise InputError(f"run {key[:12]} was not started in {self.path}")
            for split, (labels, scores) in predictions.items():
                db.execute("INSERT OR REPLACE INTO predictions VALUES (?, ?, ?, ?)",
                           (key, split, _npy_bytes(labels), _npy_bytes(scores)))

    def rename(self, key: str, *, source: str | None = None, target: str | None = None) -> None:
        """Change the display names of a run (names are not part of its key)."""
        with self.transaction() as db:
            for col, val in (("source", source), ("target", target)):
                if val is not None:
                    db.execute(f"UPDATE runs SET {col} = ? WHERE run_key = ?", (val, key))

    def fail_run(self, key: str, error: str) -> None:
        """Mark a run as failed with an error message (it is retried by the next grid call)."""
        with self.transaction() as db:
            db.execute("UPDATE runs SET status = 'failed', error = ?, finished_at = ? "
                       "WHERE run_key = ?", (error[:2000], _now(), key))

    # ------------------------------------------------------------------ reads

    def status(self, key: str) -> str | None:
        """``running``, ``finished``, ``failed`` or ``None`` (never started)."""
        row = self._db.execute("SELECT status FROM runs WHERE run_key = ?", (key,)).fetchone()
        return row[0] if row else None

    def is_finished(self, key: str) -> bool:
        """Whether run ``key`` has a committed result."""
        return self.status(key) == "finished"

    def runs(self, *, status: str | None = None, source: str | None = None,
             target: str | None = None) -> list[dict[str, Any]]:
        """Run rows as dictionaries (missing values ``None``), oldest start first."""
        where, args = [], []
        for col, val in (("status", status), ("source", source), ("target", target)):
            if val is not None:
                where.append(f"{col} = ?")
                args.append(val)
        sql = "SELECT * FROM runs" + (f" WHERE {' AND '.join(where)}" if where else "")
        cur = self._db.execute(sql + " ORDER BY started_at, rowid", args)
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]

    def run(self, key: str) -> dict[str, Any] | None:
        """One run row, or ``None``."""
        cur = self._db.execute("SELECT * FROM runs WHERE run_key = ?", (key,))
        row = cur.fetchone()
        return dict(zip([d[0] for d in cur.description], row)) if row else None

    def epochs(self, key: str) -> list[dict[str, Any]]:
        """Per-epoch metrics of a run, in epoch order."""
        cur = self._db.execute(f"SELECT {', '.join(EPOCH_COLUMNS)} FROM epochs WHERE run_key = ? "
                               "ORDER BY epoch", (key,))
        return [dict(zip(EPOCH_COLUMNS, r)) for r in cur.fetchall()]

    def predictions(self, key: str, split: str = "test") -> tuple[NDArray, NDArray]:
        """``(labels, scores)`` saved for ``split`` (``val`` or ``test``) of a finished run."""
        row = self._db.execute("SELECT labels, scores FROM predictions WHERE run_key = ? AND "
                               "split = ?", (key, split)).fetchone()
        if row is None:
            raise InputError(f"no {split} predictions for run {key[:12]} in {self.path}")
        return (np.load(io.BytesIO(row[0]), allow_pickle=False),
                np.load(io.BytesIO(row[1]), allow_pickle=False))

    def replicates(self) -> list[dict[str, Any]]:
        """Replicate rows (see :meth:`record_replicates`), by selected run then seed order.

        ``seeds`` holds the parsed seed list; an empty list when the store has no replicates.
        """
        has = self._db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND "
                               "name='replicates'").fetchone()
        if not has:
            return []
        cur = self._db.execute(f"SELECT {', '.join(REPLICATE_COLUMNS)} FROM replicates "
                               "ORDER BY selected_key, rowid")
        rows = [dict(zip(REPLICATE_COLUMNS, r)) for r in cur.fetchall()]
        for r in rows:
            r["seeds"] = json.loads(r["seeds_json"])
        return rows

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.runs())

    def count(self, status: str | None = None) -> int:
        """Number of runs (with that status)."""
        if status is None:
            return int(self._db.execute("SELECT COUNT(*) FROM runs").fetchone()[0])
        return int(self._db.execute("SELECT COUNT(*) FROM runs WHERE status = ?",
                                    (status,)).fetchone()[0])


def open_store(path: PathLike | RunStore) -> RunStore:
    """``path`` opened as a :class:`RunStore` (a store is returned as is)."""
    return path if isinstance(path, RunStore) else RunStore(path)

