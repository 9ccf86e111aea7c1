"""The Dask executor of ``evaluation batch``: chapter runs on a dask.distributed cluster.

``evaluation batch STUDY [STUDY ...] --scheduler tcp://host:8786`` sends the runs of all
the studies to a running Dask scheduler; ``--workers N`` starts a ``LocalCluster`` of N
worker processes (one thread each) for the batch. The local pool of
:mod:`evaluation.report.batch` stays the default. Whichever executor runs them, each run
goes through the same function, :func:`evaluation.report.batch.run_chapter`, in a Jupyter
kernel kept by the worker (one per worker thread) for all the runs it takes; the batch
process keeps the locks, publishes each finished run, runs a study's summary after its
other runs and writes the manifests and indexes, so the report's files are the same.

A Dask worker that dies loses only the runs it held: the scheduler gives them to another
worker (``distributed.scheduler.allowed-failures`` times; a ``LocalCluster`` of the batch
allows one retry, as the local pool does), then the run is recorded as failed
(``WorkerDied``). SIGINT / SIGTERM cancel the runs not started, interrupt the kernels
running the others, and (``--workers``) close the local cluster.

The workers read the study files and write the runs' pages and results into the batch's
temporary folder beside ``outputs/``: on several machines, the project, the data and
``EVALUATION_OUTPUT_ROOT`` must be on a file system that every worker sees at the same
paths (see ``docs/dask.md``).
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
from pathlib import Path

from evaluation.report.batch import KernelSlot, Run, copy_tail, describe_failure, failure_line, run_chapter

_SLOTS: dict[int, KernelSlot] = {}  # in a Dask worker: the kept kernel of each of its threads
_SLOTS_LOCK = threading.Lock()


def run_on_worker(run: Run, out_dir: str, log_path: str) -> dict:
    """A Dask task: one chapter run through :func:`run_chapter` in this worker thread's
    kept kernel; what the run prints (a traceback, say) goes to ``log_path``."""
    with _SLOTS_LOCK:
        slot = _SLOTS.get(threading.get_ident())
        if slot is not None and not Path(slot.output).parent.is_dir():  # left by a batch that was killed
            slot.kill()
            slot = None
        if slot is None:  # the kernel's own output (start-up warnings) goes to a log of its own
            kernel_log = Path(log_path).parent / f".kernel-dask-{os.getpid()}-{threading.get_ident()}.log"
            slot = _SLOTS[threading.get_ident()] = KernelSlot(output=str(kernel_log), worker=_worker_name())
    mark = os.path.getsize(slot.output) if os.path.exists(slot.output) else 0
    with open(log_path, "a", encoding="utf-8", errors="replace") as log, \
            contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        outcome = run_chapter(run, out_dir, slot)
    copy_tail(slot.output, mark, log_path)
    return outcome


def _worker_name() -> str:
    """The worker in the manifest's memory figures: the Dask worker's address and this
    thread (each thread keeps a kernel of its own), else host and process id."""
    import socket

    try:
        from distributed import get_worker

        address = get_worker().address
    except (ImportError, ValueError):
        address = f"{socket.gethostname()}:{os.getpid()}"
    return f"{address}/{threading.current_thread().name}"


def interrupt_kernels() -> int:
    """Run on every worker when the batch is interrupted: SIGINT to each kept kernel."""
    for slot in list(_SLOTS.values()):
        slot.interrupt()
    return len(_SLOTS)


def kill_kernels() -> int:
    """Run on every worker when the batch ends: kill the kept kernels (the next batch
    starts fresh ones, which import the code as it is then)."""
    with _SLOTS_LOCK:
        slots = list(_SLOTS.values())
        _SLOTS.clear()
    for slot in slots:
        slot.kill()
    return len(slots)


class DaskPool:
    """The executor interface of the batch (``idle``, ``busy``, ``submit``, ``wait``,
    ``close``, ``kill``, as :class:`evaluation.report.batch._LocalPool`) on a Dask client:
    of the scheduler at ``scheduler``, or of a ``LocalCluster`` of ``workers`` processes."""

    def __init__(self, *, scheduler: str | None = None, workers: int | None = None):
        import dask
        from distributed import Client, LocalCluster

        self.cluster = None
        if scheduler is not None:
            self.client = Client(scheduler, timeout="30s")
        else:
            with dask.config.set({"distributed.scheduler.allowed-failures": 1, "logging.distributed": "error"}):
                self.cluster = LocalCluster(n_workers=max(1, int(workers or 1)), threads_per_worker=1, processes=True,
                                            dashboard_address=None, silence_logs=40)
            self.client = Client(self.cluster)
        self.futures: dict = {}  # future -> run
        self.submitted = 0

    def idle(self) -> bool:
        return True  # the scheduler queues the runs

    @property
    def busy(self) -> int:
        return len(self.futures)

    def submit(self, run: Run, pages: str, log: str) -> None:
        self.submitted += 1  # a key of its own, also for a run submitted again
        future = self.client.submit(run_on_worker, run, pages, log, pure=False,
                                    key=f"evaluation-{run.stem}-{os.getpid()}-{self.submitted}")
        self.futures[future] = run

    def wait(self, timeout: float = 1.0) -> list[tuple[Run, dict]]:
        from distributed import wait as dask_wait

        if not self.futures:
            return []
        try:
            done, _ = dask_wait(list(self.futures), timeout=timeout, return_when="FIRST_COMPLETED")
        except TimeoutError:
            return []
        return [(self.futures.pop(f), self._outcome(f)) for f in done]

    @staticmethod
    def _outcome(future) -> dict:
        from distributed import KilledWorker

        if future.status == "finished":
            return future.result()
        exc = future.exception() if future.status == "error" else None
        if exc is None or isinstance(exc, KilledWorker):
            reason = "cancelled" if exc is None else "its workers died"
            failure = {"ename": "WorkerDied", "evalue": f"the Dask task ended without a result ({reason})",
                       "cell_index": None, "exec_count": None, "cell_source": "", "in_notebook": False}
        else:
            failure = describe_failure(exc)
        return {"status": "failed", "seconds": 0.0, "error": failure_line(failure), "failure": failure}

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.run(kill_kernels)
        self._shut()

    def kill(self) -> None:
        """Cancel the runs, interrupt the kernels running some, close the client (and the local cluster)."""
        if self.client is None:
            return
        with contextlib.suppress(Exception):
            self.client.cancel(list(self.futures), force=True)
        with contextlib.suppress(Exception):
            self.client.run(interrupt_kernels)
        with contextlib.suppress(Exception):
            self.client.run(kill_kernels)
        self.futures.clear()
        self._shut()

    def _shut(self) -> None:
        if self.client is None:
            return
        with contextlib.redirect_stderr(io.StringIO()), contextlib.suppress(Exception):
            self.client.close()
            if self.cluster is not None:
                self.cluster.close()
        self.client = self.cluster = None
