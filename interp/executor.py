"""Where the independent pieces of a sweep run: in this process (:class:`Local`) or on a Ray
cluster (:class:`Ray`), behind one interface, :meth:`Executor.map`.

A sweep splits into chunks (patching cells, prompts of a dataset, models of a reproduction);
``map(fn, model, chunks)`` runs ``fn(model, chunk)`` for each chunk and returns the results in
the chunks' order, whatever order they finished in.  Nothing is ever silently missing: a chunk
whose task failed is run again (``retries`` times; each failure is reported on the progress bar
and in :attr:`Executor.report`), and a chunk that fails on every try raises, naming it.  An
error in the user's input raised inside a task (:data:`interp.errors.USER_ERRORS`) is raised
at once, as itself.

Ray is imported only by :class:`Ray` (``executor="ray"``).  It connects to the cluster at
``RAY_ADDRESS`` when that is set (an unreachable address fails in one line within seconds),
else starts a local cluster of ``workers`` processes (default: ``INTERP_RAY_WORKERS``, else the
number of CPU cores) running ``threads`` torch threads each (default 1).  Each worker loads the
model once, the way it was loaded here (:attr:`interp.Model.load_spec`: a zoo name, a folder,
a hub id; a model built in memory cannot be shipped and is refused), and keeps it for later
tasks.

Besides patching and head scores: :func:`interp.reproduce.run_many` (``interp reproduce --model A
--model B --ray``) maps ``fn(None, (spec, finding, ...))``, one task per (model, finding) pair,
with :func:`model_for` loading each spec in the worker; :func:`interp.sae.harvest` maps
``fn(model, shard job)`` a wave of shards at a time and writes the ordered results.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from interp.errors import USER_ERRORS, InputError, SetupError

EXECUTORS = ("local", "ray")
CONNECT_TIMEOUT_S = 3.0


@dataclass
class Report:
    """What the last :meth:`Executor.map` did: ``executor``, ``workers``, ``chunks`` and
    ``failures`` (one dict per failed try: ``chunk``, ``attempt``, ``error``; each was retried)."""

    executor: str = "local"
    workers: int = 1
    chunks: int = 0
    failures: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"executor": self.executor, "workers": self.workers, "chunks": self.chunks, "failures": self.failures}


class Executor:
    """Runs ``fn(model, chunk)`` over chunks (see the module docstring)."""

    name = "local"

    def __init__(self) -> None:
        self.report = Report(self.name)

    @property
    def workers(self) -> int:
        return 1

    def n_chunks(self, n_items: int, per_worker: int = 2) -> int:
        """How many chunks to split ``n_items`` into: ``per_worker`` per worker (for balance and
        progress), at most one per item."""
        return max(1, min(n_items, self.workers * per_worker))

    def map(
        self,
        fn: Callable[[Any, Any], Any],
        model,
        chunks: Sequence,
        *,
        desc: str = "chunks",
        progress: bool = False,
        size: Callable[[Any], int] | None = None,
        gpus: int | None = None,
    ) -> list:
        """``[fn(model, chunk) for chunk in chunks]``; ``size(chunk)`` counts a chunk's items for the
        progress bar (default 1 per chunk); ``gpus`` per task on a cluster (default: 1 when
        ``model`` is on CUDA; give it when the chunks load their own models)."""
        raise NotImplementedError


class Local(Executor):
    """In this process, one chunk after the other."""

    name = "local"

    def map(self, fn, model, chunks, *, desc="chunks", progress=False, size=None, gpus=None) -> list:
        from tqdm.auto import tqdm

        self.report = Report("local", 1, len(chunks))
        out = []
        with tqdm(
            total=sum(size(c) if size else 1 for c in chunks), desc=desc, disable=not progress, leave=False
        ) as bar:
            for chunk in chunks:
                out.append(fn(model, chunk))
                bar.update(size(chunk) if size else 1)
        return out


def split(items: Sequence, n: int) -> list[list]:
    """``items`` in ``n`` contiguous chunks of near-equal size (order kept; none empty)."""
    items = list(items)
    n = max(1, min(n, len(items)))
    base, extra = divmod(len(items), n)
    out, start = [], 0
    for i in range(n):
        end = start + base + (1 if i < extra else 0)
        out.append(items[start:end])
        start = end
    return out


# --- models in workers -------------------------------------------------------------------------

_MODELS: dict[str, Any] = {}


def spec_of(model) -> dict:
    """How a worker loads the same model (:attr:`interp.Model.load_spec`); refuses a model built
    in memory, which cannot be loaded elsewhere."""
    spec = getattr(model, "load_spec", None)
    if not spec:
        raise InputError(
            f"executor='ray' loads the model in each worker the way it was loaded here, but "
            f"{model.cfg.name or 'this model'} was built in memory (not by interp.load of a zoo name, folder "
            "or hub id); save it and load it by path, or use executor='local'"
        )
    if getattr(model, "active_hooks", ()):
        raise InputError(
            "executor='ray' runs on fresh copies of the model in each worker: the hooks active here "
            "(Model.hooks / intervene) would not apply there; run outside the with-block or use executor='local'"
        )
    return dict(spec)


def on_cuda(spec: dict) -> bool:
    """Whether a load spec (:func:`spec_of`) places its model on a CUDA device."""
    return str(spec.get("device") or "cpu").startswith("cuda")


def model_for(spec: dict):
    """The model of ``spec`` in this (worker) process, loaded once and kept."""
    import interp

    key = json.dumps(spec, sort_keys=True, default=str)
    if key not in _MODELS:
        if len(_MODELS) >= 2:  # a worker serving several models keeps the last two
            _MODELS.pop(next(iter(_MODELS)))
        _MODELS[key] = interp.load(**spec)
    return _MODELS[key]


def _in_worker(fn, spec, chunk, threads: int):
    """A task's body in a Ray worker: ``threads`` torch threads, the model of ``spec``, ``fn``."""
    import torch

    if threads and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    model = model_for(spec) if spec is not None else None
    return fn(model, chunk)


# --- Ray -------------------------------------------------------------------------------------


def _reachable(address: str) -> tuple[bool, str]:
    """Whether ``address`` (``host:port`` or ``ray://host:port``) accepts a TCP connection within
    :data:`CONNECT_TIMEOUT_S` (Ray itself would retry for a minute or more)."""
    text = address.strip()
    if "://" in text:
        text = text.split("://", 1)[1]
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        return False, "not of the form host:port (or ray://host:port, or auto)"
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
            return True, ""
    except OSError as e:
        return False, (e.strerror or type(e).__name__).lower() if not isinstance(e, TimeoutError) else (
            f"no answer within {CONNECT_TIMEOUT_S:g} s"
        )


def connect(workers: int | None = None, address: str | None = None) -> int:
    """Connects this process to Ray (once): to ``address`` / ``RAY_ADDRESS`` if given, else a new
    local cluster of ``workers`` CPUs.  Returns the number of CPUs the cluster offers."""
    try:
        import ray
    except ImportError:
        raise SetupError(
            "executor='ray' needs Ray, which is not installed: pip install 'interp-workbench[ray]' (ray==2.60.0)"
        ) from None
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS", "").strip() or None
        opts: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        if address is not None:
            if address not in ("auto", "local"):
                ok, why = _reachable(address)
                if not ok:
                    raise SetupError(
                        f"cannot reach the Ray cluster at {address!r} (RAY_ADDRESS): {why}; start it "
                        "(`ray start --head`), fix the address, or unset RAY_ADDRESS to start a local cluster"
                    )
            try:
                ray.init(address=address, **opts)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise SetupError(
                    f"cannot connect to the Ray cluster at {address!r}: {str(e).splitlines()[0]}"
                ) from None
        else:
            n = workers or int(os.environ.get("INTERP_RAY_WORKERS", "0") or 0) or (os.cpu_count() or 1)
            # a small object store: chunks and results are tokens and metric values, not activations
            ray.init(num_cpus=n, object_store_memory=256 * 2**20, **opts)
    return int(ray.cluster_resources().get("CPU", 1))


class Ray(Executor):
    """On a Ray cluster (see the module docstring).  workers: CPUs of a local cluster started
    here (ignored when connecting to ``RAY_ADDRESS`` or a running cluster); threads: torch
    threads per task; retries: extra tries of a failed chunk."""

    name = "ray"

    def __init__(
        self, workers: int | None = None, threads: int = 1, retries: int = 2, address: str | None = None
    ) -> None:
        super().__init__()
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise InputError(f"workers must be a positive int, got {workers!r}")
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise InputError(f"threads must be a positive int, got {threads!r}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise InputError(f"retries must be a non-negative int, got {retries!r}")
        self.threads, self.retries = threads, retries
        self._cpus = connect(workers, address)
        self._workers = max(1, self._cpus // threads)

    @property
    def workers(self) -> int:
        return self._workers

    def map(self, fn, model, chunks, *, desc="chunks", progress=False, size=None, gpus=None) -> list:
        import ray
        from ray.exceptions import RayTaskError
        from tqdm.auto import tqdm

        spec = spec_of(model) if model is not None else None
        if gpus is None:
            gpus = 1 if spec and on_cuda(spec) else 0
        task = ray.remote(_in_worker).options(num_cpus=self.threads, num_gpus=gpus, max_retries=0)
        self.report = Report("ray", self.workers, len(chunks))
        results: dict[int, Any] = {}
        pending: dict[Any, tuple[int, int]] = {}

        def submit(i: int, attempt: int) -> None:
            pending[task.remote(fn, spec, chunks[i], self.threads)] = (i, attempt)

        for i in range(len(chunks)):
            submit(i, 1)
        bar = tqdm(total=sum(size(c) if size else 1 for c in chunks), desc=desc, disable=not progress, leave=False)
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                ref = done[0]
                i, attempt = pending.pop(ref)
                try:
                    value = ray.get(ref)
                except RayTaskError as e:
                    cause = getattr(e, "cause", None)
                    if isinstance(cause, USER_ERRORS):  # the input is wrong: every try would fail alike
                        raise cause from None
                    self._failed(i, attempt, cause if isinstance(cause, BaseException) else e, bar, submit)
                    continue
                except ray.exceptions.RayError as e:  # the worker died, the object was lost, ...
                    self._failed(i, attempt, e, bar, submit)
                    continue
                if i not in results:  # a chunk counts once, whichever try returned it
                    results[i] = value
                    bar.update(size(chunks[i]) if size else 1)
        finally:
            bar.close()
            for ref in pending:
                ray.cancel(ref, force=True)
        missing = [i for i in range(len(chunks)) if i not in results]
        if missing:  # cannot happen: every chunk either returned or raised above
            raise RuntimeError(f"chunks {missing} returned nothing")
        return [results[i] for i in range(len(chunks))]

    def _failed(self, i: int, attempt: int, error: BaseException, bar, submit) -> None:
        first = str(error).strip().splitlines()
        msg = f"{type(error).__name__}: {first[-1][:300] if first else ''}"
        self.report.failures.append({"chunk": i, "attempt": attempt, "error": msg, "time": time.time()})
        if attempt > self.retries:
            if isinstance(error, Exception) and not isinstance(error, __import__("ray").exceptions.RayError):
                raise error  # a bug in the task: its own traceback
            raise SetupError(
                f"chunk {i + 1} of {self.report.chunks} failed on all {attempt} tries on the Ray cluster "
                f"(last: {msg}); no result was kept for it"
            )
        bar.write(f"chunk {i + 1} of {self.report.chunks} failed ({msg}); retrying (try {attempt + 1})")
        submit(i, attempt + 1)


def get(executor: str | Executor | None = None, **options) -> Executor:
    """An executor from its name (``"local"``, ``"ray"``; None = local) or itself; ``options`` go to
    :class:`Ray` (``workers``, ``threads``, ``retries``, ``address``)."""
    if executor is None or executor == "local":
        return Local()
    if isinstance(executor, Executor):
        return executor
    if executor == "ray":
        return Ray(**options)
    raise InputError(f"executor must be one of {EXECUTORS} or an interp.executor.Executor, got {executor!r}")
