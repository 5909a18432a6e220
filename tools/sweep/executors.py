"""Where candidates run: a local pool of worker processes, or Ray tasks. Both run ``evaluate.run_candidate``,
each candidate in a fresh process with one thread, and write its outcome with ``worker.write_outcome``; a crash or
a timeout of one candidate is reported through ``on_done`` and the others go on.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from onnxpress.irpasses.core.errors import BackendUnavailableError, DataError
from onnxpress.irpasses.core.native_output import native_stderr
from onnxpress.tools.sweep.evaluate import ONE_THREAD_ENV, Outcome, Task
from onnxpress.tools.sweep.store import SweepDir
from onnxpress.tools.sweep.worker import job_payload, write_outcome

Done = Callable[[str, str | None], None]
"""Called once per candidate, from the driver's thread: its id and why it did not finish (None when it did)."""


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class LocalPool:
    """Up to ``workers`` worker processes at a time on this machine (``python -m onnxpress.tools.sweep.worker``);
    model and data are read from their paths, the outcome written into the sweep directory by the worker."""

    kind = "local processes"

    def __init__(self, workers: int, timeout_s: float, store: SweepDir, model: str, calib: str, eval_path: str) -> None:
        self.workers = max(1, workers)
        self.timeout_s = timeout_s
        self.store, self.model, self.calib, self.eval_path = store, model, calib, eval_path
        self._running: dict[str, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()

    def connect(self) -> None:
        """Nothing to reach: local workers need only this machine."""

    def _one(self, task: Task) -> tuple[str, str | None]:
        cid = task.candidate["id"]
        folder = self.store.folder(cid)
        job = folder / "job.json"
        job.write_text(json.dumps(job_payload(task, self.store.root, self.model, self.calib, self.eval_path)))
        with (folder / "worker.log").open("wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "onnxpress.tools.sweep.worker", str(job)], stdout=log,
                                    stderr=subprocess.STDOUT, env={**os.environ, **ONE_THREAD_ENV}, start_new_session=True)
            with self._lock:
                self._running[cid] = proc
            try:
                code = proc.wait(timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                proc.wait()
                return cid, f"timed out after {self.timeout_s:g} s"
            finally:
                with self._lock:
                    self._running.pop(cid, None)
        if self.store.read(cid, "result.json") is None:
            how = f"signal {-code}" if code < 0 else f"exit code {code}"
            tail = (folder / "worker.log").read_text(errors="replace").strip().splitlines()[-1:] or [""]
            return cid, f"worker process died ({how}): {tail[0][:200]} (log: {folder / 'worker.log'})"
        return cid, None

    def run(self, tasks: Sequence[Task], on_done: Done) -> None:
        pool = concurrent.futures.ThreadPoolExecutor(self.workers)
        try:
            futures = [pool.submit(self._one, t) for t in tasks]
            for future in concurrent.futures.as_completed(futures):
                on_done(*future.result())
        except BaseException:  # Ctrl-C or an error in the driver: no orphan keeps computing
            with self._lock:
                for proc in self._running.values():
                    _kill_group(proc)
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)


def _ray_task(task: Task, model: Any, calib: Any, eval_samples: Any, reference: Any) -> Outcome:
    """The Ray task body: the same candidate run as a local worker's, in a process Ray starts for it alone."""
    from onnxpress.tools.sweep.evaluate import run_candidate

    os.environ.update(ONE_THREAD_ENV)
    try:  # numpy may have started its thread pool before the environment said one thread
        from threadpoolctl import threadpool_limits

        limit: Any = threadpool_limits(1)
    except ImportError:
        limit = contextlib.nullcontext()
    with limit:
        return run_candidate(task, model, calib, eval_samples, reference)


def check_ray_address(address: str) -> None:
    """Fail in seconds, with the address in the message, instead of Ray's minute of retries."""
    if address in ("auto", "local") or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise DataError(f"--ray {address!r}: expected HOST:PORT (the head node's GCS address), 'auto' or 'local'")
    try:
        with socket.create_connection((host, int(port)), timeout=3.0):
            pass
    except OSError as err:
        raise BackendUnavailableError(f"cannot reach the Ray cluster at {address}: {err.strerror or err}",
                                      hint="start one with 'ray start --head', pass its address, or use --ray local") from err


class RayPool:
    """Ray tasks on a cluster (``address``), or on a local one started here (``local``). The model and data go
    into Ray's object store once and every task reads them from there; outcomes come back to the driver."""

    kind = "Ray tasks"

    def __init__(self, address: str, workers: int | None, timeout_s: float, store: SweepDir) -> None:
        self.address, self.timeout_s, self.store = address, timeout_s, store
        self.workers = workers or 1
        self._asked = workers
        self.inputs: tuple[Any, ...] = ()

    def connect(self) -> None:
        try:
            import ray
        except ImportError as err:
            raise BackendUnavailableError("--ray needs Ray", hint="pip install 'onnxpress[sweep]'") from err
        check_ray_address(self.address)
        import logging

        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR,
                                   "configure_logging": True, "ignore_reinit_error": True}
        failure = None
        with native_stderr() as lines:  # Ray's C++ client retries for seconds, a line to fd 2 each time
            try:
                if self.address == "local":
                    ray.init(num_cpus=self.workers, **options)
                else:
                    ray.init(address=self.address, **options)
            except (ConnectionError, RuntimeError, ValueError) as err:
                failure = err
        if failure is not None:
            said = "\n".join(lines)
            if "InvalidAuthToken" in said or "Unauthenticated" in said:
                raise BackendUnavailableError(
                    f"the Ray cluster at {self.address} refused this client's authentication token",
                    hint="a cluster started by 'ray start' uses token authentication: set RAY_AUTH_MODE=token, with its "
                         "token in RAY_AUTH_TOKEN or ~/.ray/auth_token") from failure
            raise BackendUnavailableError(f"cannot connect to the Ray cluster at {self.address}: {str(failure).splitlines()[0]}",
                                          hint="start one with 'ray start --head', or use --ray local") from failure
        if self._asked is None:
            self.workers = max(1, int(ray.cluster_resources().get("CPU", 1)))

    def put(self, model: bytes | str, calib: Any, eval_samples: Any, reference: Any) -> None:
        import ray

        self.inputs = tuple(ray.put(x) for x in (model, calib, eval_samples, reference))

    def run(self, tasks: Sequence[Task], on_done: Done) -> None:
        import ray

        remote = ray.remote(num_cpus=1, max_retries=0, max_calls=1, runtime_env={"env_vars": ONE_THREAD_ENV})(_ray_task)
        pending = list(tasks)
        running: dict[Any, tuple[Task, float]] = {}
        try:
            while pending or running:
                while pending and len(running) < self.workers:  # no queue inside Ray: a task's clock starts when it does
                    task = pending.pop(0)
                    running[remote.remote(task, *self.inputs)] = (task, time.monotonic())
                ready, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
                for ref in ready:
                    task, _ = running.pop(ref)
                    try:
                        outcome: Outcome = ray.get(ref)
                    except ray.exceptions.RayError as err:
                        on_done(task.candidate["id"], f"Ray task failed: {str(err).strip().splitlines()[0][:200]}")
                        continue
                    write_outcome(self.store, outcome)
                    on_done(task.candidate["id"], None)
                now = time.monotonic()
                for ref, (task, started) in list(running.items()):
                    if now - started > self.timeout_s:
                        ray.cancel(ref, force=True)
                        running.pop(ref)
                        on_done(task.candidate["id"], f"timed out after {self.timeout_s:g} s")
        finally:
            for ref in running:
                ray.cancel(ref, force=True)

    def close(self) -> None:
        import ray

        if ray.is_initialized():
            ray.shutdown()


def model_path_for_ray(path: Path) -> bytes | str:
    """The file's bytes (into the object store) unless its weights live in external files: then the path, which
    every node must see (a shared file system)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    return str(path) if external else path.read_bytes()
