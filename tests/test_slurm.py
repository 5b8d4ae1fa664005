"""``sslterm slurm``: the batch script's content, and running it against fake Slurm tools
that record their arguments, which proves no profile value is interpreted by a shell."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sslterm import cli
from sslterm.errors import UserError
from sslterm.profile.load import load_profile, validate_text
from sslterm.runs import launcher, scheduler
from sslterm.runs.launcher import create_run
from sslterm.runs.slurm import SCRIPT_NAME, render_sbatch
from sslterm.runs.store import RunDir

# Each would create a file named PWNED if a shell ever interpreted it. (Profile names
# are limited to [A-Za-z0-9_.-] by the schema; tests/bad_profiles covers that.)
HOSTILE_CONFIG = "cfg $(touch PWNED) 'q\" ;touch PWNED.yaml"
HOSTILE_GPUS = "0,1,2,3; touch PWNED"
HOSTILE_ROOT = "$(touch PWNED) 'q\""

# Fake Slurm tools and interpreter. srun runs its command once per node (one task per
# node) with that node's SLURM_NODEID; "python" hands the supervisor to the real
# interpreter and records every other call (the accelerate launch on each node).
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
codes = [subprocess.call(args, env=dict(os.environ, SLURM_NODEID=str(i), SLURM_NNODES=str(nodes)))
         for i in range(nodes)]
sys.exit(max(codes))
"""
FAKE_SCONTROL = """
import os, sys
if sys.argv[1:] != ["show", "hostnames", os.environ["SLURM_JOB_NODELIST"]]:
    sys.exit(f"unexpected scontrol call {sys.argv}")
print("node-a")
print("node-b")
"""
FAKE_PYTHON = """
import json, os, sys
args = sys.argv[1:]
if args[:2] == ["-m", "sslterm.runs.supervise"]:
    os.execv(sys.executable, [sys.executable, *args])
with open(os.environ["FAKE_LOG"], "a") as fh:
    fh.write(json.dumps({"tool": "python", "node": os.environ["SLURM_NODEID"], "argv": args}) + "\\n")
if os.environ["SLURM_NODEID"] == "0":  # rank 0 of the trainer ends the run
    with open(os.path.join(args[-1], "events.jsonl"), "a") as fh:
        fh.write(json.dumps({"v": 1, "kind": "run_finished", "t": 0, "epoch": 0, "step": 0,
                             "results": {}}) + "\\n")
"""


def fake_tool(folder: Path, name: str, body: str) -> Path:
    path = folder / name
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)
    return path


def profile_text(name: str = "job", root: str = "./data", **launch: object) -> str:
    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in launch.items())
    return (
        f'name = {json.dumps(name)}\n[data]\ndataset = "synthetic"\nroot = {json.dumps(root)}\n'
        '[model]\nencoder = "test_resnet"\n'
        f"[train]\nbatch_size = 64\nprecision = \"bf16\"\n[launch]\n{extra}"
    )


def render(profile_toml: str, run_dir: Path, **kw: object) -> str:
    args = {"nodes": 2, "gpus_per_node": 4, "partition": "gpu", "time": "01:00:00",
            "workdir": str(run_dir.parent), "python": sys.executable, **kw}
    return render_sbatch(validate_text(profile_toml, "p.toml"), run_dir, **args)


def bash_syntax_ok(script: str, tmp_path: Path) -> bool:
    path = tmp_path / "check.sbatch"
    path.write_text(script)
    return subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0


def test_script_runs_one_launch_per_node_with_slurm_rendezvous(tmp_path: Path) -> None:
    script = render(profile_text(main_process_port=29501), tmp_path / "run")
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --partition=gpu", "#SBATCH --time=01:00:00",
                 'HOSTS=$(scontrol show hostnames "$SLURM_JOB_NODELIST")'):
        assert line in script.splitlines()
    assert "srun --nodes=2 --ntasks=2 --ntasks-per-node=1" in script
    assert script.count("accelerate.commands.launch") == 1
    assert '--machine_rank "$SLURM_NODEID"' in script
    assert '--num_machines "$SLURM_NNODES"' in script
    assert "--num_processes 8 " in script  # global: 2 nodes x 4
    assert "--main_process_ip \"$MAIN_HOST\"" in script
    assert "--main_process_port 29501 " in script
    assert "--mixed_precision bf16 " in script
    assert '-m sslterm.runs.supervise "$RUN_DIR" -- ' in script
    assert bash_syntax_ok(script, tmp_path)


def test_single_process_job_has_no_multi_gpu(tmp_path: Path) -> None:
    script = render(profile_text(), tmp_path / "run", nodes=1, gpus_per_node=1, partition=None)
    assert "--multi_gpu" not in script and "--same_network" not in script
    assert "--partition" not in script


@pytest.mark.parametrize(("kw", "message"), [
    ({"time": "1h\n#SBATCH --x"}, "--time"),
    ({"partition": "gpu\nrm -rf ~"}, "--partition"),
    ({"nodes": 0}, "--nodes"),
])
def test_malformed_job_values_are_refused(kw: dict, message: str, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=message):
        render(profile_text(), tmp_path / "run", **kw)


def test_hostile_values_reach_accelerate_verbatim(tmp_path: Path) -> None:
    """Run the script with fake srun/scontrol/python: each node's accelerate launch gets
    exactly the intended argv, nothing was executed, and the supervisor records the end."""
    bin_dir, work = tmp_path / "bin", tmp_path / "work"
    bin_dir.mkdir()
    work.mkdir()
    fake_tool(bin_dir, "srun", FAKE_SRUN)
    fake_tool(bin_dir, "scontrol", FAKE_SCONTROL)
    python = fake_tool(bin_dir, "fake-python", FAKE_PYTHON)
    profile = validate_text(profile_text(
        "job.1", HOSTILE_ROOT, main_process_port=29501, accelerate_config=HOSTILE_CONFIG,
        gpu_ids=HOSTILE_GPUS, output_dir=str(tmp_path / "out $(touch PWNED) 'q\"")), "p.toml")
    run = create_run(profile)
    script = render_sbatch(profile, run.path, nodes=2, gpus_per_node=4, partition="gpu",
                           time="01:00:00", workdir=str(work), python=str(python))
    assert bash_syntax_ok(script, tmp_path)
    assert re.search(r"^#SBATCH --job-name=[A-Za-z0-9_.-]+$", script, re.MULTILINE)
    assert HOSTILE_ROOT not in script  # the trainer reads data.root from the frozen profile
    path = run.path / SCRIPT_NAME
    path.write_text(script)
    log = tmp_path / "calls.jsonl"
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", FAKE_LOG=str(log),
               SLURM_JOB_NODELIST="node-[a-b]", SLURM_NNODES="2")
    done = subprocess.run(["bash", str(path)], cwd=tmp_path, env=env, timeout=60,
                          start_new_session=True, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr + (run.stdout.read_text() if run.stdout.exists() else "")
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert [c["tool"] for c in calls] == ["srun", "python", "python"]
    assert calls[0]["argv"][:4] == ["--nodes=2", "--ntasks=2", "--ntasks-per-node=1",
                                    "--kill-on-bad-exit=1"]
    for rank, call in enumerate(calls[1:]):
        assert call["node"] == str(rank)
        assert call["argv"] == [
            "-m", "accelerate.commands.launch", "--machine_rank", str(rank), "--num_machines", "2",
            "--config_file", HOSTILE_CONFIG, "--num_processes", "8",
            "--main_process_ip", "node-a", "--main_process_port", "29501",
            "--mixed_precision", "bf16", "--dynamo_backend", "no", "--multi_gpu", "--same_network",
            "--gpu_ids", HOSTILE_GPUS, "-m", "sslterm.train", str(run.path),
        ]
    assert not list(tmp_path.rglob("PWNED*")), "a profile value was run by the shell"
    assert run.read_status()["state"] == "finished"


# -- the command ---------------------------------------------------------------------


class SlurmCommand:
    """``sslterm slurm PROFILE ...`` in-process, the data/encoder checks stubbed (they have
    their own tests); the stub asserts they run before any run directory exists."""

    def __init__(self, tmp_path: Path) -> None:
        self.out = tmp_path / "runs"
        self.profile = tmp_path / "job.toml"
        self.profile.write_text(profile_text(num_processes=2))
        self.checked: list[object] = []

    def check(self, profile: object, *args: object, **kwargs: object) -> None:
        assert not self.out.exists() or not any(self.out.iterdir()), "run dir before checks"
        self.checked.append(profile)

    def __call__(self, *argv: str) -> int:
        return cli.main(["--output-dir", str(self.out), "slurm", str(self.profile), *argv])


@pytest.fixture
def slurm_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SlurmCommand:
    command = SlurmCommand(tmp_path)
    monkeypatch.setattr("sslterm.runs.slurm.check_profile_environment", command.check)
    monkeypatch.chdir(tmp_path)
    return command


def only_run(out: Path) -> Path:
    runs = [p for p in out.iterdir() if p.is_dir()]
    assert len(runs) == 1
    return runs[0]


def fake_sbatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake_tool(bin_dir, "sbatch", body)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return tmp_path / "sbatch-argv.json"


def test_writes_script_and_queued_run(slurm_cli, capsys: pytest.CaptureFixture) -> None:
    assert slurm_cli("--nodes", "2", "--gpus-per-node", "4") == 0
    run_dir = only_run(slurm_cli.out)
    assert len(slurm_cli.checked) == 1
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "queued" and "slurm_job_id" not in status
    frozen = load_profile(run_dir / "profile.toml").launch
    assert (frozen.num_machines, frozen.num_processes, frozen.machine_rank) == (2, 4, 0)
    script = (run_dir / SCRIPT_NAME).read_text()
    assert "--num_processes 8 " in script and "#SBATCH --nodes=2" in script
    assert f"cd -- {shlex.quote(str(Path.cwd()))}" in script
    out = capsys.readouterr().out
    assert str(run_dir / SCRIPT_NAME) in out and f"submit with: sslterm resume {run_dir.name}" in out


def test_defaults_come_from_the_profile(slurm_cli) -> None:
    assert slurm_cli() == 0
    script = (only_run(slurm_cli.out) / SCRIPT_NAME).read_text()
    assert "#SBATCH --nodes=1" in script and "#SBATCH --gpus-per-node=2" in script
    assert "--num_processes 2 " in script


def test_job_shape_is_checked_against_the_batch(slurm_cli, capsys: pytest.CaptureFixture) -> None:
    assert slurm_cli("--nodes", "5") == 2  # batch 64 over 10 processes
    err = capsys.readouterr().err.splitlines()
    assert err == [f"sslterm: {slurm_cli.profile}:8: train.batch_size: must divide evenly "
                   "over 10 processes (got 64)"]
    assert not slurm_cli.out.exists()


def test_submit_records_job_id(slurm_cli, tmp_path, monkeypatch, capsys) -> None:
    argv_file = fake_sbatch(tmp_path, monkeypatch, (
        "import json, sys\n"
        f"json.dump(sys.argv[1:], open({str(tmp_path / 'sbatch-argv.json')!r}, 'w'))\n"
        "print('Submitted batch job 123')\n"))
    assert slurm_cli("--submit") == 0
    run_dir = only_run(slurm_cli.out)
    status = json.loads((run_dir / "status.json").read_text())
    assert status["slurm_job_id"] == "123" and status["state"] == "queued"
    assert json.loads(argv_file.read_text()) == [str(run_dir / SCRIPT_NAME)]
    assert "submitted batch job 123" in capsys.readouterr().out


def test_submit_without_sbatch_is_one_line(slurm_cli, tmp_path, monkeypatch, capsys) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert shutil.which("sbatch") is None
    assert slurm_cli("--submit") == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "sbatch" in err[0] and "Traceback" not in err[0]
    assert not slurm_cli.out.exists() or not any(slurm_cli.out.iterdir())


def test_sbatch_failure_marks_run_failed(slurm_cli, tmp_path, monkeypatch, capsys) -> None:
    fake_sbatch(tmp_path, monkeypatch, (
        "import sys\n"
        "print('sbatch: error: invalid partition specified: nope', file=sys.stderr)\n"
        "sys.exit(1)\n"))
    assert slurm_cli("--submit", "--partition", "nope") == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "invalid partition specified: nope" in err[0]
    status = json.loads((only_run(slurm_cli.out) / "status.json").read_text())
    assert status["state"] == "failed" and "invalid partition" in status["error"]


# -- a Slurm run seen from a login node: squeue, scancel, sbatch again ----------------------
FAKE_SLURM_TOOL = """
import json, os, sys
name = os.path.basename(sys.argv[0])
with open(os.environ["FAKE_LOG"], "a") as fh:
    fh.write(json.dumps({"tool": name, "argv": sys.argv[1:]}) + "\\n")
jobs = json.load(open(os.environ["FAKE_JOBS"]))  # job id -> Slurm state
if name == "squeue":
    job = sys.argv[sys.argv.index("-j") + 1]
    if job not in jobs:
        sys.exit("slurm_load_jobs error: Invalid job id specified")
    print(jobs[job])
elif name == "sbatch":
    print("Submitted batch job 99")
"""


class FakeSlurm:
    """squeue answers from a jobs file; every call is logged; answers are not cached."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        bin_dir = tmp_path / "slurm-bin"
        bin_dir.mkdir()
        for tool in ("squeue", "scancel", "sbatch"):
            fake_tool(bin_dir, tool, FAKE_SLURM_TOOL)
        self.log, self.jobs_file = tmp_path / "slurm.log", tmp_path / "jobs.json"
        self.jobs = {}
        monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
        monkeypatch.setenv("FAKE_LOG", str(self.log))
        monkeypatch.setenv("FAKE_JOBS", str(self.jobs_file))
        monkeypatch.setattr(scheduler, "CACHE_SECONDS", 0.0)
        self.out = tmp_path / "runs"

    @property
    def jobs(self) -> dict[str, str]:
        return json.loads(self.jobs_file.read_text())

    @jobs.setter
    def jobs(self, value: dict[str, str]) -> None:
        self.jobs_file.write_text(json.dumps(value))

    def calls(self, tool: str) -> list[list[str]]:
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        return [c["argv"] for c in map(json.loads, lines) if c["tool"] == tool]

    def run(self, job: str, **status: object) -> RunDir:
        run = create_run(validate_text(profile_text(), "job.toml"), self.out)
        (run.path / SCRIPT_NAME).write_text("#!/bin/bash\n")
        run.update_status(slurm_job_id=job, **status)
        return run


@pytest.fixture
def slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeSlurm:
    return FakeSlurm(tmp_path, monkeypatch)


def test_login_node_state_follows_squeue(slurm: FakeSlurm) -> None:
    pending = slurm.run("77")
    running = slurm.run("78", state="running", host="node-a", pid=1, pgid=1)
    slurm.jobs = {"77": "PENDING", "78": "RUNNING"}
    state = scheduler.run_state
    assert state(pending) == ("queued", "") and state(running) == ("running", "")
    slurm.jobs = {}  # both gone without a final status: scancel'ed, node failure
    assert state(pending)[0] == state(running)[0] == "failed"
    assert state(running)[1] == ("Slurm job 78 ended without a final status "
                                 "(cancelled, or its node failed)")
    running.update_status(state="finished")
    assert state(running) == ("finished", "")  # a final status is believed as it is
    assert len(slurm.calls("squeue")) == 5  # not one for the finished run


def test_the_run_directory_never_asks_slurm(slurm: FakeSlurm) -> None:
    """The run-directory contract knows nothing of Slurm: only the resolver asks squeue."""
    pending = slurm.run("77")
    slurm.jobs = {}
    assert pending.state() == ("queued", "")
    assert slurm.calls("squeue") == []


def test_without_squeue_the_recorded_state_stands(slurm, tmp_path, monkeypatch) -> None:
    run = slurm.run("77")
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    assert scheduler.run_state(run) == ("queued", "")


def test_kill_and_stop_from_a_login_node_go_through_scancel(slurm: FakeSlurm) -> None:
    running = slurm.run("78", state="running", host="node-a", pid=1, pgid=os.getpgid(0))
    pending = slurm.run("77")
    slurm.jobs = {"77": "PENDING", "78": "RUNNING"}
    launcher.kill_run(running)  # no killpg here: pgid is this test's own group
    assert slurm.calls("scancel") == [["--full", "--signal=KILL", "78"]]
    assert running.read_status()["state"] == "failed"
    launcher.request_stop(pending)
    assert slurm.calls("scancel")[-1] == ["77"]
    assert scheduler.run_state(pending) == ("stopped", "Slurm job 77 cancelled before it started")


def test_a_run_on_another_host_is_never_signalled_from_here(tmp_path: Path) -> None:
    victim = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        run = create_run(validate_text(profile_text(), "job.toml"), tmp_path / "runs")
        run.update_status(state="running", host="elsewhere", pid=victim.pid, pgid=victim.pid)
        with pytest.raises(UserError, match="runs on elsewhere: kill it there"):
            launcher.kill_run(run)
        assert victim.poll() is None  # a process group number means nothing on this host
    finally:
        victim.kill()
        victim.wait()


def test_resume_submits_the_batch_script_again(slurm: FakeSlurm) -> None:
    run = slurm.run("78", state="stopped", host="node-a", pid=1, pgid=1)
    with pytest.raises(UserError, match="resume it without overrides"):
        launcher.resume_run(run, ["train.epochs=90"])
    assert launcher.resume_run(run) is run
    assert slurm.calls("sbatch") == [[str(run.path / SCRIPT_NAME)]]
    status = run.read_status()
    assert (status["state"], status["slurm_job_id"], status["pgid"]) == ("queued", "99", None)
    slurm.jobs = {"99": "PENDING"}
    with pytest.raises(UserError, match=r"already queued \(Slurm job 99\)"):
        launcher.resume_run(run)


# -- a script written but never submitted -------------------------------------------------
@pytest.mark.parametrize("command", ["stop", "kill"])
def test_an_unsubmitted_run_can_be_stopped_killed_and_removed(
    command: str, slurm_cli, capsys: pytest.CaptureFixture
) -> None:
    assert slurm_cli() == 0  # no --submit: nothing will ever start this run
    run = RunDir(only_run(slurm_cli.out))
    capsys.readouterr()
    assert cli.main(["-o", str(slurm_cli.out), command, run.id]) == 0
    state, error = scheduler.run_state(run)
    assert state == ("stopped" if command == "stop" else "failed"), (state, error)
    assert cli.main(["-o", str(slurm_cli.out), "rm", run.id, "--yes"]) == 0
    assert not run.path.exists()


def test_a_pending_job_is_not_removed(slurm: FakeSlurm, capsys: pytest.CaptureFixture) -> None:
    run = slurm.run("77")
    slurm.jobs = {"77": "PENDING"}
    assert cli.main(["-o", str(slurm.out), "rm", run.id, "--yes"]) == 2
    assert "waits in Slurm as job 77" in capsys.readouterr().err
    assert run.path.is_dir()


def test_node_resources_and_pre_emption_directives(tmp_path: Path) -> None:
    """CPUs and memory for every process and its data workers, on #SBATCH and srun alike;
    Slurm's warning goes to the batch script alone, which requeues the job."""
    text = profile_text().replace('root = "./data"\n', 'root = "./data"\nnum_workers = 7\n')
    script = render(text, tmp_path / "run")  # 4 processes a node
    lines = script.splitlines()
    for line in ("#SBATCH --cpus-per-task=32", "#SBATCH --mem=132G",
                 "#SBATCH --signal=B:USR1@120", "#SBATCH --requeue"):
        assert line in lines
    assert "  --cpus-per-task=32 --mem=132G \\" in lines
    assert "trap 'SIGNALLED=yes; kill -TERM \"$SUPERVISOR\" 2>/dev/null || true' USR1 TERM" in lines
    set_by_hand = render(profile_text(slurm_cpus_per_task=10, slurm_mem_gb=64,
                                      slurm_requeue=False), tmp_path / "run")
    assert "#SBATCH --cpus-per-task=10" in set_by_hand and "#SBATCH --mem=64G" in set_by_hand
    assert "--requeue" not in set_by_hand and "REQUEUE=no" in set_by_hand
    assert bash_syntax_ok(script, tmp_path)
