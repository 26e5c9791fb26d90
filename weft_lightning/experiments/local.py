"""The local launcher: every run as its own ``weft fit`` then ``weft test`` process, N at once.

Each run keeps its records in its folder: ``config.yaml`` (the resolved config), ``run.json``
(state, exit status, wall time), ``fit.log`` and ``test.log``, and the ``progress.json`` and
``results.json`` of :class:`weft_lightning.callbacks.ExperimentRun`. Launching again skips the
finished runs, resumes an interrupted fit from its newest valid checkpoint (``--ckpt_path
last``) and retries failed runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from rich.console import Console
from rich.live import Live
from rich.table import Table

from weft_lightning.callbacks.experiment_run import (
    PROGRESS_FILE,
    RESULTS_FILE,
    RUN_ENV,
    write_json,
)
from weft_lightning.experiments.plan import Run

__all__ = ["LocalLauncher", "RunOutcome", "read_json", "run_finished"]

Phase = Literal["fit", "test"]
STATE_FILE = "run.json"


def read_json(path: Path) -> dict[str, Any]:
    """A JSON record, or an empty dict when it does not exist (yet) or is unreadable."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def run_finished(folder: Path) -> bool:
    """A run whose fit and test both ended well and whose results are on disk."""
    return (
        read_json(folder / STATE_FILE).get("state") == "done" and (folder / RESULTS_FILE).is_file()
    )


@dataclass
class RunOutcome:
    """How a run ended in this launch."""

    run: Run
    state: str
    log: Path | None = None
    wall_s: float = 0.0


@dataclass
class _Active:
    run: Run
    phase: Phase
    process: subprocess.Popen[bytes]
    log: IO[bytes]
    started: float = field(default_factory=time.monotonic)


class LocalLauncher:
    """Runs an experiment's runs on this machine, ``jobs`` at a time (see the module docstring).

    Args:
        runs: the runs to launch, in order.
        configs: each run's resolved config by run name, saved as its ``config.yaml``.
        jobs: processes at once; each gets ``OMP_NUM_THREADS`` = cores / jobs unless the
            environment sets it.
        console: where the live table (on a terminal) or one line per event goes.
    """

    def __init__(
        self,
        runs: Sequence[Run],
        configs: dict[str, str],
        jobs: int = 1,
        console: Console | None = None,
    ) -> None:
        if jobs < 1:
            raise ValueError(f"--jobs={jobs} must be at least 1.")
        self.runs, self.configs, self.jobs = list(runs), configs, jobs
        self.console = console or Console()
        self.threads = max(1, (os.cpu_count() or 1) // jobs)
        self.outcomes: dict[str, RunOutcome] = {}
        self._active: list[_Active] = []

    # ---------------------------------------------------------------- processes
    def _env(self, run: Run) -> dict[str, str]:
        env = dict(os.environ)
        env[RUN_ENV] = str(run.folder.resolve())
        env.setdefault("OMP_NUM_THREADS", str(self.threads))
        env.setdefault("WANDB_RUN_GROUP", run.experiment)  # W&B: grouped by experiment,
        env.setdefault("WANDB_JOB_TYPE", run.variant)  # then by variant
        env["WANDB_NAME"] = run.name
        return env

    def _start(self, run: Run, phase: Phase) -> None:
        args = run.fit_args if phase == "fit" else run.test_args
        log = (run.folder / f"{phase}.log").open("ab")
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} weft {' '.join(args)}\n".encode())
        log.flush()
        process = subprocess.Popen(
            [sys.executable, "-m", "weft_lightning.cli", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self._env(run),
            start_new_session=True,  # stopped as a group with its data-loader workers
            preexec_fn=_die_with_launcher,
        )
        self._active.append(_Active(run, phase, process, log))
        self._record(run, phase, started=time.time())
        self._event(run, f"{phase} started (log {run.folder / f'{phase}.log'})")

    def _record(self, run: Run, state: str, **fields: Any) -> None:
        path = run.folder / STATE_FILE
        record = read_json(path) | {"variant": run.variant, "seed": run.seed, "state": state}
        write_json(path, record | fields)

    def _prepare(self, run: Run) -> bool:
        """Write the run's config; False when the run already finished."""
        if run_finished(run.folder):
            self.outcomes[run.name] = RunOutcome(run, "done (earlier)")
            self._event(run, "finished earlier; skipped")
            return False
        run.folder.mkdir(parents=True, exist_ok=True)
        (run.folder / "config.yaml").write_text(self.configs[run.name])
        return True

    def _finish(self, active: _Active, code: int) -> None:
        run, phase = active.run, active.phase
        active.log.close()
        wall = time.monotonic() - active.started
        log = run.folder / f"{phase}.log"
        if code != 0:
            self._record(run, "failed", phase=phase, returncode=code, log=str(log))
            self.outcomes[run.name] = RunOutcome(run, "failed", log, wall)
            self._event(run, f"{phase} FAILED with exit status {code}; see {log}")
            return
        if phase == "fit":
            self._record(run, "fitted", fit_done=True, fit_wall_s=round(wall, 1))
            self._event(run, f"fit done in {wall:.0f} s")
            self._start(run, "test")
            return
        if not (run.folder / RESULTS_FILE).is_file():
            self._record(run, "failed", phase=phase, returncode=code, log=str(log))
            self.outcomes[run.name] = RunOutcome(run, "failed", log, wall)
            self._event(run, f"test wrote no {RESULTS_FILE}; see {log}")
            return
        self._record(run, "done", returncode=0, test_wall_s=round(wall, 1))
        self.outcomes[run.name] = RunOutcome(run, "done", log, wall)
        self._event(run, f"test done in {wall:.0f} s")

    def _stop_all(self) -> None:
        for active in self._active:
            if active.process.poll() is None:
                os.killpg(active.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for active in self._active:
            try:
                active.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(active.process.pid, signal.SIGKILL)
                active.process.wait()
            active.log.close()
            self._record(active.run, "interrupted", phase=active.phase)
            self.outcomes[active.run.name] = RunOutcome(active.run, "interrupted")
        self._active = []

    # ---------------------------------------------------------------- the loop
    def launch(self) -> list[RunOutcome]:
        """Run everything; an interrupt (Ctrl-C, SIGTERM) stops the running processes, which
        the next launch resumes."""
        pending = [run for run in self.runs if self._prepare(run)]
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            with self._display() as live:
                while pending or self._active:
                    while pending and len(self._active) < self.jobs:
                        run = pending.pop(0)
                        fitted = read_json(run.folder / STATE_FILE).get("fit_done", False)
                        self._start(run, "test" if fitted else "fit")
                    self._poll()
                    if live is not None:
                        live.update(self.table())
                    time.sleep(0.5)
        except KeyboardInterrupt:
            self._stop_all()
            raise
        finally:
            signal.signal(signal.SIGTERM, previous)
        return [self.outcomes[run.name] for run in self.runs]

    def _poll(self) -> None:
        for active in list(self._active):
            code = active.process.poll()
            if code is not None:
                self._active.remove(active)
                self._finish(active, code)

    # ---------------------------------------------------------------- display
    def _display(self) -> Any:
        if self.console.is_terminal:
            return Live(self.table(), console=self.console, refresh_per_second=1)
        return contextlib.nullcontext()

    def _event(self, run: Run, text: str) -> None:
        if not self.console.is_terminal:
            self.console.print(f"[{time.strftime('%H:%M:%S')}] {run.name}: {text}")

    def table(self) -> Table:
        """Each run's state, step, latest metric and time left."""
        table = Table(title=f"experiment {self.runs[0].experiment}" if self.runs else None)
        for column in ("run", "state", "step", "metric", "elapsed", "ETA"):
            table.add_column(column, justify="left" if column in ("run", "state") else "right")
        active = {a.run.name: a for a in self._active}
        for run in self.runs:
            table.add_row(*_row(run, active.get(run.name), self.outcomes.get(run.name)))
        return table


def _row(run: Run, active: _Active | None, outcome: RunOutcome | None) -> list[str]:
    progress = read_json(run.folder / PROGRESS_FILE)
    step, budget = progress.get("step"), progress.get("max_steps")
    steps = f"{step}/{budget}" if step is not None and budget else (str(step or "") or "-")
    if outcome is not None or active is None:
        results = read_json(run.folder / RESULTS_FILE).get("metrics", {})
        sm = next((v for k, v in results.items() if k.endswith("/sm")), None)
        metric = f"Sm {sm:.4f}" if sm is not None else "-"
        return [run.name, outcome.state if outcome else "pending", steps, metric, "-", "-"]
    elapsed = time.monotonic() - active.started
    loss = progress.get("loss")
    metric = f"loss {loss:.4f}" if active.phase == "fit" and loss is not None else "-"
    eta = "-"
    done = (step or 0) - progress.get("first_step", 0)
    if active.phase == "fit" and done > 0 and budget and progress.get("elapsed_s"):
        eta = f"{progress['elapsed_s'] / done * (budget - step):.0f} s"
    return [run.name, active.phase, steps, metric, f"{elapsed:.0f} s", eta]


def _die_with_launcher() -> None:
    """Linux: the run gets SIGTERM when the launcher dies, even by SIGKILL (no orphans that
    would race the resumed run); elsewhere a no-op."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
