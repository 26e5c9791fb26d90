"""The SLURM launcher: one array job, a task per run, each running the project's
``scripts/slurm/weft.sbatch`` (DDP over the task's GPUs, ``--ckpt_path last``) and then
``weft test`` on one GPU, in the run's folder."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from weft_lightning.callbacks.experiment_run import RUN_ENV
from weft_lightning.experiments.plan import Run

__all__ = ["SBATCH_SCRIPT", "array_script", "submit"]

#: The single-run SLURM script that every array task calls for its fit.
SBATCH_SCRIPT = Path("scripts/slurm/weft.sbatch")


def _directives(template: Path) -> list[str]:
    """The resource lines of the single-run script, without its name and output."""
    if not template.is_file():
        raise FileNotFoundError(
            f"{template} does not exist; run `weft experiment` from the repository root."
        )
    lines = [line for line in template.read_text().splitlines() if line.startswith("#SBATCH")]
    return [
        line for line in lines if not line.startswith(("#SBATCH --job-name", "#SBATCH --output"))
    ]


def _fit_call(run: Run) -> list[str]:
    """``bash weft.sbatch CONFIG ARGS...``: the script takes the first config as its own."""
    args = list(run.args)
    if len(args) < 2 or args[0] != "--config":
        raise ValueError(f"run {run.name}: SLURM runs need a config file first, got {args[:2]}")
    return ["bash", str(SBATCH_SCRIPT), args[1], *args[2:]]


def array_script(runs: Sequence[Run], experiment: str, log_folder: Path) -> str:
    """The array job's script: ``--array=0-(N-1)``, one ``case`` branch per run."""
    lines = [
        "#!/bin/bash",
        f"# Experiment {experiment}: {len(runs)} runs, one array task each (weft experiment).",
        f"#SBATCH --job-name=weft-{experiment}",
        f"#SBATCH --array=0-{len(runs) - 1}",
        f"#SBATCH --output={log_folder}/%x-%A_%a.out",
        *_directives(SBATCH_SCRIPT),
        "",
        "set -euo pipefail",
        'cd "${SLURM_SUBMIT_DIR:-$(pwd)}"',
        'case "${SLURM_ARRAY_TASK_ID:?run as a SLURM array job}" in',
    ]
    for index, run in enumerate(runs):
        test = ["srun", "--ntasks=1", "weft", *run.test_args, "--trainer.devices=1"]
        lines += [
            f"  {index})  # {run.name}",
            f"    export {RUN_ENV}={shlex.quote(str(run.folder.resolve()))}",
            f"    mkdir -p {shlex.quote(str(run.folder))}",
            f"    {shlex.join(_fit_call(run))}",
            f"    {shlex.join(test)}",
            "    ;;",
        ]
    lines += ['  *) echo "no run for task $SLURM_ARRAY_TASK_ID" >&2; exit 2 ;;', "esac", ""]
    return "\n".join(lines)


def submit(script: Path) -> str:
    """``sbatch SCRIPT``; returns sbatch's answer (the job id line)."""
    if shutil.which("sbatch") is None:
        raise FileNotFoundError(
            f"sbatch is not on PATH; the array script is written at {script}: submit it on the "
            "cluster with `sbatch` from the repository root."
        )
    done = subprocess.run(["sbatch", str(script)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"sbatch {script} failed: {done.stderr.strip()}")
    return done.stdout.strip()
