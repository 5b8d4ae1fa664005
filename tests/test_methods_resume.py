"""A momentum method stopped mid-epoch and resumed gives the losses of an uninterrupted run:
the teacher, and DINO's center, come back from the checkpoint exactly (real CLI, real
`accelerate launch`, `sslterm stop` then `sslterm resume`)."""

from __future__ import annotations

import pytest
from faulthelpers import cli, start, step_losses, wait_ended, wait_step
from runhelpers import EXACT_METHOD_RUN, METHOD_ENCODER, SMOKE, events, only_run, sslterm

pytestmark = pytest.mark.slow

STEPS = 4  # EXACT_METHOD_RUN's train.max_steps_per_epoch


@pytest.mark.parametrize("method", ["byol", "dino"])
def test_stopped_and_resumed_gives_the_losses_of_an_uninterrupted_run(method, tmp_path):
    own = [f"model.method={method}", *EXACT_METHOD_RUN, *METHOD_ENCODER.get(method, [])]
    sslterm("-o", str(tmp_path / "whole"), "run", str(SMOKE), *own, cwd=tmp_path, check=True,
            timeout=400)
    whole = only_run(tmp_path / "whole")
    # paced so that `sslterm stop` (a new Python process on a loaded machine) lands mid-epoch
    run = start(tmp_path / "runs", *own, env={"SSLTERM_FAULT_STEP_SLEEP": "4"})
    wait_step(run, 1, 1)
    res = cli(run.parent, "stop", run.name, "--wait")
    assert res.returncode == 0, res.stdout + res.stderr
    stopped = next(e for e in reversed(events(run)) if e["kind"] == "run_stopped")
    assert 1 <= stopped["step"] < STEPS  # stopped part-way: the resume has steps left to run
    res = cli(run.parent, "resume", run.name)
    assert res.returncode == 0, res.stdout + res.stderr
    assert wait_ended(run) == "finished"
    assert len(step_losses(whole)) == STEPS
    assert step_losses(run) == pytest.approx(step_losses(whole), rel=1e-5, abs=1e-6)
