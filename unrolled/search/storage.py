"""Where a search lives: Optuna's journal file (embedded, the default) or an RDB server; and how a
killed worker's trial is found and queued again.

* A path (``runs/search/search.journal``): :class:`optuna.storages.JournalStorage` on a
  :class:`~optuna.storages.journal.JournalFileBackend`, no server. Every process on the machine
  (or on machines sharing the file system with working ``flock``/``symlink``) may open it.
* ``postgresql://user@host/db`` (or ``sqlite:///file.db``, ``mysql://...``): an
  :class:`optuna.storages.RDBStorage` with Optuna's heartbeats (``HEARTBEAT_S``): a trial
  whose heartbeat is older than ``GRACE_S`` is failed by the next worker that starts a trial,
  and :class:`optuna.storages.RetryHeartbeatStaleTrialCallback` queues it again.
* Very many workers: put a gRPC proxy in front of the RDB (``optuna.storages.run_grpc_proxy_server
  (RDBStorage(url), host=..., port=13000)`` on one machine; ``grpc://host:13000`` here opens
  :class:`optuna.storages.GrpcStorageProxy`): workers then hold no database connection each.

The journal has no heartbeat, so trials carry a **lease** (:class:`Lease`): the worker's host
and PID and a time stamp refreshed every ``HEARTBEAT_S`` as a user attribute. A running trial
is stale when its worker's PID is gone on this host, or its lease is older than ``GRACE_S``
(another host, or a hung worker). :func:`requeue_stale` fails it and enqueues its parameters
once (the one process whose FAIL lands first re-queues; the others get Optuna's
``UpdateFinishedTrialError`` and leave it), so a killed worker loses at most its running trial.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import warnings
from pathlib import Path

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.trial import TrialState

from ..errors import UsageError

HEARTBEAT_S = 10
GRACE_S = 60
LOCK_GRACE_S = 5  # a journal lock older than this was left by a killed process (a write holds it for ms)
MAX_RETRY = 3  # a trial that kills its worker this often is left failed
RDB_SCHEMES = ("postgresql", "postgres", "mysql", "sqlite")


def open_storage(url: str | Path, heartbeat: int = HEARTBEAT_S, grace: int = GRACE_S) -> BaseStorage:
    """The Optuna storage of ``url``: a journal file path, an RDB URL or ``grpc://host:port``."""
    url = str(url)
    scheme = url.split("://", 1)[0].split("+", 1)[0] if "://" in url else None
    if scheme is None:
        path = Path(url)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"cannot create the directory of the journal {path}: {e.strerror}") from None
        lock = JournalFileOpenLock(str(path), grace_period=LOCK_GRACE_S)
        return JournalStorage(JournalFileBackend(str(path), lock_obj=lock))
    if scheme == "grpc":
        host, _, port = url.split("://", 1)[1].partition(":")
        return optuna.storages.GrpcStorageProxy(host=host or "localhost", port=int(port or 13000))
    if scheme not in RDB_SCHEMES:
        raise UsageError(f"--storage {url}: unknown scheme {scheme!r}; give a journal file path, "
                         f"postgresql://user@host/db, sqlite:///file.db or grpc://host:port")
    if scheme.startswith("postgres") and "+" not in url.split("://", 1)[0]:
        try:
            import psycopg2  # noqa: F401
        except ImportError:
            raise UsageError("--storage postgresql://... needs psycopg2: pip install 'unrolled[search]'") from None
        url = "postgresql+psycopg2://" + url.split("://", 1)[1]  # SQLAlchemy 2.1's default driver is psycopg 3
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(url, heartbeat_interval=heartbeat, grace_period=grace,
                              heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY))
    except Exception as e:  # sqlalchemy's errors: a server that is down, a database that does not exist
        raise UsageError(f"cannot open the storage {url}: {str(e).splitlines()[0]}") from None


def is_journal(storage: BaseStorage) -> bool:
    return isinstance(storage, JournalStorage)


def origin(trial) -> int:
    """The number of the trial a retry stands for (its own number when it is not a retry)."""
    return int(trial.user_attrs.get("retry_of", trial.number))


class Lease:
    """While open, refreshes ``trial``'s ``lease`` user attribute every ``interval`` seconds
    (journal storages only; RDB storages have Optuna's heartbeat)."""

    def __init__(self, trial: optuna.Trial, interval: float = HEARTBEAT_S) -> None:
        self.trial, self.interval, self._stop = trial, interval, threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def _write(self) -> None:
        self.trial.set_user_attr("lease", {"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()})

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._write()
            except (UpdateFinishedTrialError, RuntimeError):  # failed as stale by another worker
                return

    def __enter__(self) -> Lease:
        self._write()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child nobody has reaped yet is a zombie: dead
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def is_stale(trial, now: float | None = None, grace: float = GRACE_S) -> bool:
    """A running trial whose worker died (its PID gone on this host) or whose lease expired."""
    lease = trial.user_attrs.get("lease")
    now = time.time() if now is None else now
    if lease is None:  # killed between starting the trial and writing the lease
        start = trial.datetime_start.timestamp() if trial.datetime_start else now
        return now - start > grace
    if lease.get("host") == socket.gethostname() and not _pid_alive(int(lease["pid"])):
        return True
    return now - float(lease["time"]) > grace


def requeue_stale(study: optuna.Study, storage: BaseStorage, grace: float = GRACE_S) -> list[int]:
    """Fail the stale running trials of a journal study and enqueue each one's parameters once;
    the numbers of the trials re-queued by this call. (RDB: Optuna's heartbeat does this.)"""
    if not is_journal(storage):
        return []
    requeued = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not is_stale(t, grace=grace):
            continue
        try:
            study.tell(t.number, state=TrialState.FAIL)
        except (UpdateFinishedTrialError, ValueError):  # another worker failed it first: it re-queues it
            continue
        retries = int(t.user_attrs.get("retries", 0))
        if retries < MAX_RETRY:
            study.enqueue_trial(t.params, user_attrs={"retry_of": origin(t), "retries": retries + 1})
        requeued.append(t.number)
    return requeued
