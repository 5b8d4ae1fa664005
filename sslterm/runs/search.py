"""Search beyond grids: an Optuna study (the optional ``optuna`` extra) whose trials are runs
of the existing queue, pruned early from their validation curve.

``sslterm search P --space SPACE.toml --trials N --parallel K`` keeps at most K trials
queued or running: it asks the sampler (TPE or random) for a trial, queues its run (named
and labelled by its values, tagged ``search``), reads each live run's event log, reports
every validation's metric (kNN by default) to the study at its epoch and, where the pruner
says so, stops the run (the STOP file: it checkpoints and exits) and marks the trial pruned;
a finished run's final metric completes its trial. The trainer needs no Optuna: what it
reports at each validation is in its event log, and this process, the study's only writer,
hands it on. Everything lives beside the sweeps, so view 6 and ``sweep --show`` list it::

    <output_dir>/.sweeps/<search-id>.json   the record: profile text, space, settings, and
                                            the points (trials) so far, as a sweep's
    <output_dir>/.sweeps/<search-id>.db     the Optuna study (SQLite)

Killed, it resumes with ``sslterm search --resume SEARCH``: the study and the queue hold
everything, and runs that went on meanwhile are caught up with.

The space file: a table per key, nested like a profile, each leaf a distribution::

    [train]
    base_lr = { low = 0.01, high = 1.0, log = true }   # float (int when low and high are)
    batch_size = { choices = [64, 128, 256] }
    [simclr]
    temperature = { low = 0.05, high = 0.5, step = 0.05 }
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from sslterm.errors import UserError
from sslterm.files import atomic_write_text
from sslterm.runs import queue
from sslterm.runs.events import EventReader
from sslterm.runs.meta import RunMeta, edit_meta
from sslterm.runs.store import RunDir, check_output_dir, utc_now
from sslterm.runs.summary import event_metrics, final_accuracies
from sslterm.runs.sweep import (
    PointStatus,
    Sweep,
    load_sweep,
    new_record,
    point_name,
    read_text,
    sweep_status,
    sweeps_dir,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

OPTUNA_INSTALL = 'pip install optuna (in a clone: pip install -e ".[search]")'
SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "none")
SPEC_KEYS = frozenset({"low", "high", "log", "step", "choices"})
ENDED = ("finished", "failed", "stopped", "removed", "pruned")
PRUNED_TAG = "pruned"


def optuna_module() -> Any:
    try:
        import optuna
    except ImportError:
        raise UserError(f"search needs optuna, which is not installed: {OPTUNA_INSTALL}") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


# -- the space ----------------------------------------------------------------------------
def _override(value: Any) -> str:
    """A value as a KEY=VALUE override (TOML): strings quoted, numbers exact."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def _shown(value: Any) -> str:
    """A value in names, labels and tables: floats to 4 significant digits."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _leaves(table: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and not (set(value) & SPEC_KEYS):
            out += _leaves(value, f"{name}.")
        else:
            out.append((name, value))
    return out


def load_space(path: str | Path, profile_text: str, profile_path: str) -> dict[str, Any]:
    """The space file as {key: optuna distribution}, every key a profile key and every
    bound or choice a valid value of it; errors name the file, line and key."""
    from sslterm.profile.load import locate, validate_text
    from sslterm.runs.query import profile_keys

    optuna = optuna_module()
    dist = optuna.distributions
    text = read_text(path)
    try:
        data = tomllib.loads(text)
    except ValueError as exc:
        raise UserError(f"{path}: not TOML: {exc}") from None
    space: dict[str, Any] = {}
    for key, spec in _leaves(data):
        where = f"{path}:{locate(text, key) or 1}: {key}"
        if key not in profile_keys():
            raise UserError(f"{where}: not a profile key")
        if not isinstance(spec, dict) or not set(spec) <= SPEC_KEYS:
            raise UserError(f"{where}: write {{ low = A, high = B [, log = true] [, step = S] }}"
                            " or { choices = [A, B, ...] }")
        if "choices" in spec:
            choices = spec["choices"]
            if set(spec) != {"choices"} or not isinstance(choices, list) or len(choices) < 2 \
                    or any(isinstance(c, (list, dict)) for c in choices):
                raise UserError(f"{where}: choices: a list of two values or more (numbers, "
                                "strings or booleans) and nothing else")
            values, d = choices, dist.CategoricalDistribution(choices)
        else:
            low, high = spec.get("low"), spec.get("high")
            numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool)
                          for v in (low, high))
            if not numbers or not low < high:  # type: ignore[operator]
                raise UserError(f"{where}: low and high: two numbers, low < high")
            log, step = bool(spec.get("log", False)), spec.get("step")
            if log and (low <= 0 or step is not None):  # type: ignore[operator]
                raise UserError(f"{where}: log = true needs low > 0 and no step")
            try:
                if isinstance(low, int) and isinstance(high, int) and not isinstance(step, float):
                    d = dist.IntDistribution(low, high, log=log, step=step or 1)
                else:
                    d = dist.FloatDistribution(float(low), float(high), log=log, step=step)
            except ValueError as exc:
                raise UserError(f"{where}: {exc}") from None
            values = [low, high]
        for value in values:  # a bound the profile refuses fails here, not in trial 7
            validate_text(profile_text, profile_path, [f"{key}={_override(value)}"])
        space[key] = d
    if not space:
        raise UserError(f"{path}: no key to search (see sslterm search --help)")
    return space


# -- the record ---------------------------------------------------------------------------
def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _write(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def db_path(record: Path) -> Path:
    return record.with_suffix(".db")


def create_search(
    output_dir: str | Path,
    profile_path: str | Path,
    space_path: str | Path,
    *,
    trials: int,
    parallel: int = 1,
    fixed: Sequence[str] = (),
    metric: str = "knn",
    sampler: str = "tpe",
    pruner: str = "median",
    startup: int = 5,
    seed: int | None = None,
    meta: RunMeta | None = None,
) -> Sweep:
    """Check everything and record a new search (its study is made on the first run)."""
    from sslterm.profile.load import validate_text

    if trials < 1:
        raise UserError(f"<command line>: --trials: must be >= 1 (got {trials})")
    if parallel < 1:
        raise UserError(f"<command line>: --parallel: must be >= 1 (got {parallel})")
    if startup < 0:
        raise UserError(f"<command line>: --startup-trials: must be >= 0 (got {startup})")
    if sampler not in SAMPLERS:
        raise UserError(f"<command line>: --sampler {sampler}: use one of {', '.join(SAMPLERS)}")
    if pruner not in PRUNERS:
        raise UserError(f"<command line>: --pruner {pruner}: use one of {', '.join(PRUNERS)}")
    path = Path(profile_path)
    text = read_text(profile_path)
    stem = validate_text(text, str(path), fixed).name
    space = load_space(space_path, text, str(path))
    optuna = optuna_module()
    check_output_dir(output_dir)
    target = new_record(sweeps_dir(output_dir), f"{stem}-search")
    meta = meta or RunMeta()
    data = {
        "id": target.stem, "profile": str(path), "keys": list(space), "points": [], "names": [],
        "parallel": parallel, "created": utc_now(), "kind": "search", "pruned": [],
        "text": text, "stem": stem, "fixed": list(fixed), "trials": trials, "metric": metric,
        "direction": "minimize" if "loss" in metric else "maximize", "sampler": sampler,
        "pruner": pruner, "startup": startup, "seed": seed, "cwd": str(Path.cwd()),
        "space": {k: optuna.distributions.distribution_to_json(d) for k, d in space.items()},
        "meta": meta.to_json(),
    }
    _write(target, data)
    return load_sweep(target)


def _study(record: Path, data: dict[str, Any]) -> Any:
    optuna = optuna_module()
    seed = data.get("seed")
    sampler = (optuna.samplers.RandomSampler(seed=seed) if data["sampler"] == "random"
               else optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(
                   10, max(1, data["trials"] // 3))))
    pruner = (optuna.pruners.NopPruner() if data["pruner"] == "none"
              else optuna.pruners.MedianPruner(n_startup_trials=data["startup"],
                                               n_warmup_steps=0))
    storage = f"sqlite:///{db_path(record).resolve()}"
    return optuna.create_study(storage=storage, study_name=data["id"], sampler=sampler,
                               pruner=pruner, direction=data["direction"], load_if_exists=True)


def final_value(results: Any, metric: str) -> float | None:
    """A finished run's final ``metric``: ``linear``/``knn`` as the tables quote them, else a
    number of results.json's ``final`` (``ssl_val_loss``; ``val_loss`` finds it too)."""
    if metric in ("linear", "knn"):
        return final_accuracies(results)[metric]
    final = results.get("final") if isinstance(results, dict) else None
    final = final if isinstance(final, dict) else {}
    for key in (metric, f"ssl_{metric}"):
        value = final.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    return None


class Driver:
    """One pass of :meth:`step` catches up with every live trial and fills free slots."""

    def __init__(self, output_dir: str | Path, search: Sweep,
                 say: Callable[[str], None] = print) -> None:
        self.out = Path(output_dir)
        self.record = search.path
        self.data = _read(self.record)
        if self.data.get("kind") != "search":
            raise UserError(f"{search.id} is a sweep, not a search")
        self.optuna = optuna_module()
        self.study = _study(self.record, self.data)
        self.space = {k: self.optuna.distributions.json_to_distribution(v)
                      for k, v in self.data["space"].items()}
        self.readers: dict[int, EventReader] = {}
        self.say = say
        self._abandon_unqueued()

    @property
    def sweep(self) -> Sweep:
        return load_sweep(self.record)

    def _abandon_unqueued(self) -> None:
        """A trial asked for but never recorded (killed between the two): failed."""
        TrialState = self.optuna.trial.TrialState
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.number >= len(self.data["points"]):
                self.study.tell(t.number, state=TrialState.FAIL)

    def _ask(self) -> None:
        trial = self.study.ask(self.space)
        i = trial.number
        if i != len(self.data["points"]):  # another process asked meanwhile: not ours
            self.study.tell(i, state=self.optuna.trial.TrialState.FAIL)
            raise UserError(f"search {self.data['id']}: its study was changed by another process")
        values = {k: _shown(v) for k, v in trial.params.items()}
        name = point_name(f"{self.data['stem']}-t{i}", values)
        meta = RunMeta(**{**self.data["meta"], "tags": tuple(self.data["meta"].get("tags") or ())})
        label = " ".join([meta.label or self.data["stem"], f"trial {i}"])
        meta = replace(meta, label=label, tags=tuple(dict.fromkeys(("search", *meta.tags))))
        overrides = [*self.data["fixed"], *(f"{k}={_override(v)}" for k, v in trial.params.items()),
                     f"name={json.dumps(name)}"]
        self.data["points"].append(values)
        self.data["names"].append(name)
        _write(self.record, self.data)
        try:
            queue.enqueue(self.out, self.data["text"], name, overrides, source=self.data["profile"],
                          parallel=self.data["parallel"], sweep=self.data["id"], point=i,
                          meta=meta, cwd=self.data.get("cwd"))
        except UserError as exc:
            self.study.tell(i, state=self.optuna.trial.TrialState.FAIL)
            self.say(f"trial {i}: not queued: {exc}")
            return
        self.say(f"trial {i}: queued {name}")

    def _report(self, trial: Any, point: PointStatus) -> bool:
        """Hand the trial's new validation values to the study; True when it was pruned.
        A run that ended already (while the search was away) is caught up with, never
        pruned: its work is done."""
        run = point.run
        if run is None or not run.path.is_dir() or point.index in self.data["pruned"]:
            return False  # a pruned trial is told when its run has stopped
        reader = self.readers.setdefault(point.index, EventReader(run.events))
        metric = self.data["metric"]
        live = self.optuna.trial.Trial(self.study, trial._trial_id)
        reported = dict(trial.intermediate_values)
        for e in reader.read_new():
            if e.get("kind") not in ("val", "probe") or not isinstance(e.get("epoch"), int):
                continue
            value = dict(event_metrics(e)).get(metric)
            if value is None or e["epoch"] in reported:
                continue
            live.report(value, e["epoch"])
            reported[e["epoch"]] = value
            if point.state not in ENDED and live.should_prune():
                self._prune(point.index, run, e["epoch"], value)
                return True
        return False

    def _prune(self, i: int, run: RunDir, epoch: int, value: float) -> None:
        """Stop the run; the study hears of it once the run has stopped (``_finish``): a
        run that reaches its end before the stop lands completes its trial instead."""
        from sslterm.runs import launcher

        with contextlib.suppress(UserError):  # it may have ended just now
            launcher.request_stop(run)
        self.data["pruned"] = sorted({*self.data["pruned"], i})
        _write(self.record, self.data)
        with contextlib.suppress(UserError, OSError):
            edit_meta(run, add=[PRUNED_TAG])
        self.say(f"trial {i}: pruned at epoch {epoch} ({self.data['metric']} {value:.4g}): "
                 f"{run.id} stops")

    def _finish(self, i: int, point: PointStatus) -> None:
        TrialState = self.optuna.trial.TrialState
        if i in self.data["pruned"]:
            # the table shows a pruned run as "pruned" while it still stops: ask the run
            state = point.run.state()[0] if point.run is not None and point.run.path.is_dir() \
                else point.state
            if state not in ENDED:
                return  # still stopping: told once it has ended
            if state != "finished":  # stopped as asked
                self.study.tell(i, state=TrialState.PRUNED)
                return
            point = replace(point, state="finished")
            self.data["pruned"] = [j for j in self.data["pruned"] if j != i]  # too late
            _write(self.record, self.data)
            if point.run is not None:
                with contextlib.suppress(UserError, OSError):
                    edit_meta(point.run, remove=[PRUNED_TAG])
        value = None
        if point.state == "finished" and point.run is not None:
            try:
                value = final_value(json.loads(point.run.results.read_text(encoding="utf-8")),
                                    self.data["metric"])
            except (OSError, ValueError):
                value = None
        if value is None:
            self.study.tell(i, state=TrialState.FAIL)
            why = point.error or f"no final {self.data['metric']}"
            self.say(f"trial {i}: {point.state} ({why})")
        else:
            self.study.tell(i, value)
            self.say(f"trial {i}: {self.data['metric']} {value:.4g} ({point.run.id})")

    def step(self) -> bool:
        """Catch up and fill free slots; False once every trial has ended."""
        TrialState = self.optuna.trial.TrialState
        self.data = _read(self.record)
        points = sweep_status(self.sweep, self.out)
        running = {t.number: t for t in self.study.get_trials(deepcopy=False,
                                                               states=(TrialState.RUNNING,))}
        for i, trial in running.items():
            point = points[i]  # read before the log: an ended run's log is complete
            if not self._report(trial, point) and point.state in ENDED:
                self._finish(i, point)
        live = len(self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
        while len(self.data["points"]) < self.data["trials"] and live < self.data["parallel"]:
            self._ask()
            live += 1
        return live > 0 or len(self.data["points"]) < self.data["trials"]

    def run(self, poll: float = 0.5) -> None:
        while self.step():
            time.sleep(poll)


def best_trials(study: Any, n: int = 5) -> list[Any]:
    """The best completed trials, best first."""
    optuna = optuna_module()
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
    return sorted(done, key=lambda t: sign * t.value)[:n]


def open_study(search: Sweep) -> Any:
    return _study(search.path, _read(search.path))
