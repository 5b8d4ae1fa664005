"""A Slurm job's time limit or pre-emption, against fake Slurm tools on this machine: the
batch script of ``sslterm slurm`` runs for real (two "nodes" on 127.0.0.1, one run
directory, real ``accelerate launch``), gets Slurm's ``--signal=B:USR1`` and turns it
into a stop with a checkpoint, then requeues itself; run again, the job resumes
(issue 23)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from faulthelpers import (
    TINY,
    assert_whole_log,
    cli,
    events,
    kill_leftovers,
    newest,
    overrides_for,
    wait_for,
    wait_step,
)

from sslterm.runs.launcher import free_port
from sslterm.runs.slurm import SCRIPT_NAME
from sslterm.runs.store import RunDir

pytestmark = pytest.mark.slow

EPOCHS, SPE = 2, 4
# srun: every node's task at once (each with its SLURM_NODEID), its exit code the worst
FAKE_SRUN = """
import json, os, subprocess, sys
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as fh:
    fh.write(json.dumps({"tool": "srun", "argv": args}) + "\\n")
opts = {}
while args[0].startswith("--"):
    key, _, value = args.pop(0)[2:].partition("=")
    opts[key] = value
nodes = int(opts["nodes"])
tasks = [subprocess.Popen(args, env=dict(os.environ, SLURM_NODEID=str(i), SLURM_NNODES=str(nodes)))
         for i in range(nodes)]
sys.exit(max(t.wait() for t in tasks))
"""
FAKE_SCONTROL = """
import json, os, sys
with open(os.environ["FAKE_LOG"], "a") as fh:
    fh.write(json.dumps({"tool": "scontrol", "argv": sys.argv[1:]}) + "\\n")
if sys.argv[1:3] == ["show", "hostnames"]:
    print("127.0.0.1")
"""


def fake_tool(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)


def calls(log: Path, tool: str) -> list[list[str]]:
    lines = log.read_text().splitlines() if log.exists() else []
    return [c["argv"] for c in map(json.loads, lines) if c["tool"] == tool]


def test_time_limit_signal_checkpoints_and_the_requeued_job_resumes(tmp_path: Path) -> None:
    bin_dir, out = tmp_path / "bin", tmp_path / "runs"
    bin_dir.mkdir()
    fake_tool(bin_dir, "srun", FAKE_SRUN)
    fake_tool(bin_dir, "scontrol", FAKE_SCONTROL)
    res = cli(out, "slurm", str(Path(__file__).parents[1] / "profiles" / "smoke.toml"),
              "--nodes", "2", "--gpus-per-node", "1", *TINY, *overrides_for(EPOCHS, SPE),
              f"launch.main_process_port={free_port()}")
    assert res.returncode == 0, res.stdout + res.stderr
    run = next(p for p in out.iterdir() if (p / SCRIPT_NAME).exists())
    log = tmp_path / "slurm.jsonl"
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", FAKE_LOG=str(log),
               SLURM_JOB_ID="7", SLURM_JOB_NODELIST="node-[1-2]", SLURM_NNODES="2",
               SSLTERM_FAULT_STEP_SLEEP="0.5")

    def job() -> subprocess.Popen:
        return subprocess.Popen(["bash", str(run / SCRIPT_NAME)], cwd=tmp_path, env=env,
                                start_new_session=True)

    try:
        first = job()
        wait_step(run, 2, starts=1)
        first.send_signal(signal.SIGUSR1)  # --signal=B:USR1@N: the batch script alone
        assert first.wait(timeout=120) == 0, (run / "stdout.log").read_text()[-3000:]
        stopped = events(run)[-1]
        assert stopped["kind"] == "run_stopped" and stopped["step"] < EPOCHS * SPE, stopped
        assert newest(run) is not None and newest(run)[1] == stopped["step"]
        assert calls(log, "scontrol")[-1] == ["requeue", "7"]
        status = RunDir(run).read_status()
        assert (status["state"], status["slurm_job_id"]) == ("queued", "7"), status
        srun = calls(log, "srun")[0]
        assert "--cpus-per-task=1" in srun and "--mem=12G" in srun  # 1 process, no workers

        env["SLURM_RESTART_COUNT"] = "1"  # what Slurm runs again after the requeue
        env.pop("SSLTERM_FAULT_STEP_SLEEP")
        assert job().wait(timeout=180) == 0, (run / "stdout.log").read_text()[-3000:]
        wait_for(lambda: RunDir(run).read_status()["state"] == "finished", "finished", run)
        starts = [e for e in assert_whole_log(run, EPOCHS, SPE) if e["kind"] == "run_started"]
        assert [s["start_step"] for s in starts] == [0, stopped["step"]]
        assert [s["world_size"] for s in starts] == [2, 2]
        assert len(calls(log, "scontrol")) == 3  # hostnames twice, one requeue
    finally:
        kill_leftovers(run)
