"""``ptd run CONFIG --ray [ADDRESS]``: a run's chunks on a Ray cluster (a laptop, a GPU server, many machines).

:func:`ptdlib.experiment.runner.run` plans the run as always — ``run.json`` and the refusal of a changed config, the chunks
still missing from the run directory, own-length labels and fitted policies, each computed once — and hands
the chunks still to do to :func:`run_on_ray` instead of its serial loop:

* **Workers.** One Ray actor per worker slot: a GPU where the cluster has GPUs (the actor asks for
  ``num_gpus=1`` and Ray sets its ``CUDA_VISIBLE_DEVICES``), a CPU otherwise (``num_cpus=1``, one torch thread).
  Each actor loads the model once and keeps it (and one FLOP counter) for every chunk it runs.
* **Shared work.** The queries, labels and fitted policies (:class:`ptdlib.experiment.work.SharedWork`) go into Ray's
  object store once (``ray.put``); each worker fetches them once and keeps them.
* **Chunks as tasks.** An idle worker takes the next chunk; the worker runs it with
  :func:`ptdlib.experiment.work.run_chunk`, the serial path's own function, which writes the chunk file atomically
  (temporary file, fsync, rename). A chunk file therefore exists complete or not at all; a retried chunk whose
  file is already there (its worker died after writing it) is not run again, and one run twice would rewrite the
  same file: a retry never duplicates rows, and a later ``ptd run`` (with or without ``--ray``) resumes from the
  files like any other run.
* **Failures.** A worker that dies (killed, out of memory, its node lost) or a chunk that raises is retried,
  on a fresh worker when the old one died, up to ``max_attempts`` times in all; a chunk that keeps failing is
  reported by id with its last error and the rest of the run completes (``ptd run`` then exits with status 1;
  run it again to retry just those chunks).
* **Progress.** One bar in the driver (chunks done / total, retries, failures); the Ray dashboard
  (``pip install 'ptdlib[ray]'`` brings ``ray[default]``) shows the workers, their logs and their resources.

Every worker writes into the run directory itself, so on a cluster of several machines the run directory must
be on a file system that every node mounts at the same path (NFS, Lustre, ...); the driver warns when a chunk a
worker reported written is not there. Every node needs the same ptdlib installation and the model at the
config's ``model.path``; a worker whose weights differ from the run's (another model fingerprint) refuses to run.

Fault injection (tests): when ``PTD_RAY_FAULTS`` names a JSON file holding a list of ``{"chunk": ID or "*",
"times": N, "stage": "start" | "written"}``, the first ``N`` times a worker reaches ``stage`` of a matching chunk
(before evaluating it, or after writing its file but before reporting back) the worker process exits abruptly.
"""

from __future__ import annotations

import json
import os
import sys
from collections import deque
from pathlib import Path

#: attempts a chunk gets (the first one included) before it is reported as failed
MAX_ATTEMPTS = 3
#: environment variable naming the fault-injection file (see module docstring); tests only
FAULTS_ENV = "PTD_RAY_FAULTS"
#: ``address`` that starts a private local Ray instance (``ray.init()`` without an address)
LOCAL = "local"
_FAULT_STAGES = ("start", "written")


def _import_ray():
    try:
        import ray
    except ImportError as e:  # a missing optional extra is an environment the user can fix
        raise ValueError("ptd run --ray needs Ray: pip install 'ptdlib[ray]' (or ray==2.60.0)") from e
    return ray


def init_ray(address: str = LOCAL, tries: int = 3, **kwargs) -> None:
    """Connect this process to Ray.

    A local instance is started up to ``tries`` times: Ray's raylet gives its helper processes 15 s to start
    and aborts otherwise, which a busy small machine can miss (Ray then raises a bare ``Exception`` and leaves
    nothing running).

    Args:
        address: ``"local"`` starts a local instance; anything else goes to ``ray.init(address=...)``.
        tries: Attempts at starting a local instance.
        **kwargs: Passed to ``ray.init`` (e.g. ``num_cpus``, ``include_dashboard``).

    Raises:
        Exception: Ray's error, after the last attempt (or the first, for a non-local address).
    """
    ray = _import_ray()
    for attempt in range(1, tries + 1):
        try:
            ray.init(address=None if address == LOCAL else address, **kwargs)
            return
        except Exception:  # noqa: BLE001  (Ray's "node timed out during startup" is a bare Exception)
            ray.shutdown()
            if address != LOCAL or attempt == tries:
                raise


def _fault(chunk_id: str, stage: str) -> None:
    """Fault injection: exit this worker process now if ``PTD_RAY_FAULTS`` asks for it (module docstring)."""
    path = os.environ.get(FAULTS_ENV)
    if not path or not os.path.exists(path):
        return
    import fcntl

    with open(path, "r+", encoding="utf-8") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # workers race for the same budget of faults
        specs = json.loads(f.read() or "[]")
        specs = [specs] if isinstance(specs, dict) else specs
        for spec in specs:
            if spec.get("stage", "start") not in _FAULT_STAGES:
                raise ValueError(f"{FAULTS_ENV} stage must be one of {', '.join(_FAULT_STAGES)}, got {spec['stage']!r}")
            if (
                spec.get("stage", "start") == stage
                and spec.get("chunk", "*") in ("*", chunk_id)
                and int(spec.get("times", 0)) > 0
            ):
                spec["times"] = int(spec["times"]) - 1
                f.seek(0)
                f.truncate()
                f.write(json.dumps(specs))
                f.flush()
                os.fsync(f.fileno())
                os._exit(17)  # an abrupt death, as kill -9 or the OOM killer would cause: no cleanup, no exception


class ChunkWorker:
    """A Ray actor's body: the model loaded once, then one chunk per :meth:`run` call."""

    def __init__(self, model_spec, device: str, threads: int | None):
        import torch

        from ptdlib.cost.flops import FlopCounter
        from ptdlib.experiment.labels import model_fingerprint
        from ptdlib.models.spec import load_lm

        if threads:
            torch.set_num_threads(threads)
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # Ray forwards worker output to the driver, whose one bar is the run's
        self.lm = load_lm(model_spec, device)
        self.counter = FlopCounter(self.lm)
        self.fingerprint = model_fingerprint(self.lm)
        self._work: dict = {}  # ObjectRef hex -> SharedWork (fetched once, kept for every chunk)

    def run(self, cfg, out: str, chunk, work_ref: list, fingerprint: str, allow_code_execution: bool) -> int:
        """Run ``chunk`` and write its file (a chunk already written is read back instead).

        Args:
            cfg: The run config.
            out: The run directory.
            chunk: The chunk.
            work_ref: ``[ObjectRef]`` of the run's shared work (a list, so that Ray hands over the reference rather
                than fetching the object for every call).
            fingerprint: The run's model fingerprint.
            allow_code_execution: The caller's opt-in to benchmarks that run code.

        Returns:
            The number of rows.

        Raises:
            ValueError: If this worker's model is not the run's (another fingerprint).
        """
        import ray

        from ptdlib.experiment.results import chunk_path, read_chunk
        from ptdlib.experiment.work import run_chunk

        if self.fingerprint != fingerprint:
            raise ValueError(
                f"this worker's model ({self.lm.model_id}, fingerprint {self.fingerprint}) is not the "
                f"run's (fingerprint {fingerprint}): every node needs the same weights at model.path"
            )
        key = work_ref[0].hex()
        if key not in self._work:
            self._work = {key: ray.get(work_ref[0])}
        done = chunk_path(out, chunk.id)
        if done.exists():  # a retry of a chunk whose worker died after writing it (or another process wrote it)
            return len(read_chunk(done, chunk.size))
        _fault(chunk.id, "start")
        rows = run_chunk(
            self.lm, self.counter, cfg, Path(out), chunk, self._work[key], allow_code_execution=allow_code_execution
        )
        _fault(chunk.id, "written")
        return rows


def worker_slots(ray, device: str = "auto") -> tuple[int, dict]:
    """How many workers the connected cluster holds, and the Ray resources of each.

    Args:
        ray: The imported ``ray`` module, connected.
        device: ``auto``: one worker per GPU when the cluster has GPUs, else one per CPU; ``cpu`` or ``cuda``
            force the kind.

    Returns:
        ``(number of workers, resources of each)``, e.g. ``(4, {"num_gpus": 1, "num_cpus": 1})``.

    Raises:
        ValueError: For another device name, ``cuda`` on a cluster without GPUs, or a cluster without CPUs.
    """
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"--device with --ray must be auto, cpu or cuda (Ray assigns the GPU), got {device!r}")
    if device == "cuda" and gpus == 0:
        raise ValueError(f"--device cuda, but the Ray cluster has no GPU (resources: {resources})")
    if device != "cpu" and gpus > 0:
        return gpus, {"num_gpus": 1, "num_cpus": 1}
    if cpus < 1:
        raise ValueError(f"the Ray cluster offers no CPU to run workers on (resources: {resources})")
    return cpus, {"num_cpus": 1}


def run_on_ray(
    cfg,
    out: Path,
    chunks: list,
    work,
    *,
    address: str = LOCAL,
    device: str = "auto",
    workers: int | None = None,
    max_attempts: int | None = None,
    progress: bool = True,
    allow_code_execution: bool = False,
) -> tuple[int, tuple]:
    """Run ``chunks`` of ``cfg`` into run directory ``out`` on Ray.

    If this process is connected to Ray already, that connection is used.

    Args:
        cfg: The run config.
        out: The run directory.
        chunks: The chunks to run.
        work: The run's :class:`~ptdlib.experiment.work.SharedWork`, shipped once to every worker.
        address: ``"local"`` starts a local Ray instance (shut down at the end); anything else is passed to
            ``ray.init`` (``"auto"``: the cluster this machine belongs to; ``"ray://host:10001"``: a remote one).
        device: Worker kind (see :func:`worker_slots`).
        workers: Number of workers; default one per GPU (else per CPU), at most one per chunk.
        max_attempts: Attempts per chunk (default :data:`MAX_ATTEMPTS`; see module docstring).
        progress: Show a progress bar and the workers' logs.
        allow_code_execution: The caller's opt-in to benchmarks that run code.

    Returns:
        ``(rows written, failed chunks)``; failed chunks are ``(chunk id, last error)`` pairs.

    Raises:
        ValueError: If Ray is not installed, ``max_attempts`` or ``workers`` is below 1, or for a bad device.
    """
    from tqdm.auto import tqdm

    from ptdlib.experiment.results import finished_chunks, read_run

    max_attempts = MAX_ATTEMPTS if max_attempts is None else max_attempts
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be a positive number, got {workers}")
    if not chunks:
        return 0, ()
    ray = _import_ray()
    from ray.exceptions import RayActorError, RayError, RayTaskError

    started = not ray.is_initialized()
    if started:
        init_ray(address, log_to_driver=progress)
    try:
        slots, resources = worker_slots(ray, device)
        n_workers = min(workers or slots, len(chunks))
        kind = "cuda" if "num_gpus" in resources else "cpu"
        remote = ray.remote(max_restarts=0, max_task_retries=0, **resources)(ChunkWorker)

        def new_worker():
            return remote.remote(cfg.model, kind, None if kind == "cuda" else resources["num_cpus"])

        fingerprint = read_run(out)["model"]["fingerprint"]
        work_ref = [ray.put(work)]  # shipped once; every worker fetches it once
        actors = [new_worker() for _ in range(n_workers)]
        free, pending, running = list(range(n_workers)), deque(chunks), {}
        attempts: dict[str, int] = {}
        written, done, retried, failed = 0, [], 0, []
        bar = tqdm(
            total=len(chunks),
            unit="chunk",
            disable=not progress,
            dynamic_ncols=True,
            desc=f"ray: {n_workers} {kind} workers",
        )
        while pending or running:
            while pending and free:
                slot, chunk = free.pop(), pending.popleft()
                ref = actors[slot].run.remote(cfg, str(out), chunk, work_ref, fingerprint, allow_code_execution)
                running[ref] = (slot, chunk)
            ready, _ = ray.wait(list(running), num_returns=1)
            for ref in ready:
                slot, chunk = running.pop(ref)
                try:
                    written += ray.get(ref)
                    done.append(chunk)
                    bar.update(1)
                except RayError as e:
                    if isinstance(e, RayActorError):
                        if e.actor_init_failed:  # the model does not load on this worker: no retry can help
                            raise RuntimeError(f"a Ray worker could not load the model: {e}") from e
                        ray.kill(actors[slot])
                        actors[slot] = new_worker()  # a dead worker is replaced before its chunk is retried
                    attempts[chunk.id] = attempts.get(chunk.id, 0) + 1
                    if attempts[chunk.id] < max_attempts:
                        pending.append(chunk)
                        retried += 1
                    else:
                        cause = e.cause if isinstance(e, RayTaskError) and e.cause is not None else e
                        failed.append((chunk.id, _last_line(cause)))
                        bar.update(1)
                free.append(slot)
                bar.set_postfix(retried=retried, failed=len(failed), refresh=False)
        bar.close()
    finally:
        if started:
            ray.shutdown()

    for cid, error in failed:
        print(f"ptd run: chunk {cid} failed {max_attempts} times, last: {error}", file=sys.stderr, flush=True)
    present = finished_chunks(out)
    absent = [c.id for c in done if c.id not in present]
    if absent:
        print(
            f"ptd run: warning: {len(absent)} chunks reported written are not in {out} (e.g. {absent[0]}): on "
            f"several machines the run directory must be on a file system every node shares",
            file=sys.stderr,
        )
    return written, tuple(failed)


def _last_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[-1] if lines else ''}"


__all__ = ["FAULTS_ENV", "LOCAL", "MAX_ATTEMPTS", "ChunkWorker", "init_ray", "run_on_ray", "worker_slots"]
