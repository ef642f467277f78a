"""Hyperparameter sweeps on Optuna: TPE sampling, median pruning, one run directory per trial.

A sweep folder (``--out``, default ``runs/sweeps``) holds the study database ``optuna.db`` (unless
``--storage`` names another database) and, per study, one ordinary run directory per trial::

    runs/sweeps/optuna.db
    runs/sweeps/STUDY/trial-0000/   config.json metrics.csv best.pt ... (eval, predict, serve work on it)
    runs/sweeps/STUDY/history.png   importance.png   (written by --show)

Each trial trains with :func:`cnnlab.train` and reports every epoch's validation accuracy; Optuna's
median pruner stops a trial whose accuracy at an epoch is below the median of the earlier trials at
that epoch (its run is marked ``pruned``). The trial's value is its best validation accuracy (the
accuracy of its ``best.pt``); a trial whose loss diverges fails without stopping the sweep. Several
processes, on one machine or many, may run the same study at once; a heartbeat lets a killed
process's trial be marked failed instead of blocking the study.

A search space file (``--space FILE.toml``) has one table per option of ``cnnlab train``::

    [lr]                              # a float range; log = true samples log-uniformly
    low = 1e-3
    high = 0.3
    log = true

    [augment]                         # an int option gives integers (step = 1 unless given)
    low = 0
    high = 2

    [model]                           # or a list of choices, for any option
    choices = ["seednet", "lenet5"]
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnlab import runs
from cnnlab.config import TrainConfig, read_toml, validate
from cnnlab.errors import Diverged, UserError
from cnnlab.text import safe

DEFAULT_OUT = "runs/sweeps"
DEFAULT_STUDY = "sweep"
DB_NAME = "optuna.db"
HEARTBEAT_S = 10  # a running trial writes a heartbeat this often; one silent for 3x as long counts as dead
PRUNER = dict(n_startup_trials=3, n_warmup_steps=2)  # prune from epoch 2 on (steps are epochs), once 3 trials finished
OPEN_ATTEMPTS = 5  # tries to open a storage that another process is creating at the same moment
SQLITE_TIMEOUT_S = 60  # how long a process waits for another's write lock on the SQLite file
# Options that are not hyperparameters: where and how a run goes, not what it learns.
NOT_TUNABLE = ("out", "data_dir", "dataset", "classes", "device", "threads", "progress", "tensorboard",
               "checkpoint_every", "max_steps")  # fmt: skip
SPACE_KEYS = {"low", "high", "log", "step", "choices"}
# Options that say where and how a trial runs, not what it measures: a rerun may change them freely. Every
# other option a sweep does not search is stored with its study (user attr FIXED_ATTR) and must not change.
WHERE_OPTIONS = ("out", "data_dir", "device", "threads", "progress", "tensorboard", "checkpoint_every")
FIXED_ATTR = "cnnlab_fixed_options"


@dataclass(frozen=True)
class Param:
    """One dimension of the search space: a range (``low``..``high``, ``log``, ``step``) or ``choices``."""

    name: str
    kind: str  # "float", "int" or "choice"
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        if self.kind == "choice":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

    def extremes(self) -> list[Any]:
        """The values whose validity stands for the whole dimension."""
        return list(self.choices) if self.kind == "choice" else [self.low, self.high]

    def describe(self) -> str:
        if self.kind == "choice":
            return f"{self.name} in {list(self.choices)}"
        return f"{self.name} in [{self.low:g}, {self.high:g}]" + (" (log)" if self.log else "")


DEFAULT_SPACE = (
    Param("lr", "float", 1e-3, 0.3, log=True),
    Param("momentum", "float", 0.0, 0.95),
    Param("batch_size", "choice", choices=(32, 64, 128)),
    Param("weight_decay", "float", 1e-6, 1e-2, log=True),
    Param("augment", "int", 0, 2),
)


def load_space(path: str | Path, base: TrainConfig) -> tuple[Param, ...]:
    """Read a search space TOML file and check every dimension against ``base`` (see the module doc)."""
    raw = read_toml(path, "--space")
    if not raw:
        raise UserError(f"--space {path}: declares no options (one table per option, e.g. [lr] low = 1e-3 high = 0.3)")
    return tuple(_param(name, spec, base, f"--space {path}") for name, spec in raw.items())


def _param(name: str, spec: Any, base: TrainConfig, where: str) -> Param:
    """One table of a space file → :class:`Param`, refusing unknown options and impossible ranges."""
    fields = {f.name: str(f.type) for f in dataclasses.fields(TrainConfig)}
    key = name.replace("-", "_")
    if key not in fields:
        raise UserError(f"{where}: unknown option {name!r} (the options of cnnlab train, e.g. lr, momentum, model)")
    if key in NOT_TUNABLE:
        raise UserError(f"{where}: {name} is not a hyperparameter; set it with a flag instead")
    if not isinstance(spec, dict):
        raise UserError(f"{where}: [{name}] must be a table with low/high or choices, not {spec!r}")
    unknown = sorted(set(spec) - SPACE_KEYS)
    if unknown:
        raise UserError(
            f"{where}: [{name}] has unknown key(s) {', '.join(unknown)} (use {', '.join(sorted(SPACE_KEYS))})"
        )
    if "choices" in spec:
        param = _choice_param(key, spec, where)
    else:
        param = _range_param(key, spec, fields[key], where)
    for value in param.extremes():  # each end of the range must be a valid run of its own
        try:
            validate(base.replace(**{key: value}))
        except UserError as exc:
            raise UserError(f"{where}: [{name}] value {value!r} is impossible: {exc}") from None
    return param


def _choice_param(key: str, spec: dict[str, Any], where: str) -> Param:
    choices = spec["choices"]
    if set(spec) != {"choices"}:
        raise UserError(f"{where}: [{key}] has choices, so it takes no low/high/log/step")
    if not isinstance(choices, list) or not choices or len(set(map(repr, choices))) != len(choices):
        raise UserError(f"{where}: [{key}] choices must be a non-empty list without repeats (got {choices!r})")
    if not all(isinstance(c, (str, int, float, bool)) for c in choices):
        raise UserError(f"{where}: [{key}] choices must be numbers, strings or booleans (got {choices!r})")
    return Param(key, "choice", choices=tuple(choices))


def _range_param(key: str, spec: dict[str, Any], type_name: str, where: str) -> Param:
    if type_name not in ("float", "int", "int | None", "str | int"):  # str | int: --augment's pixel shifts
        raise UserError(f"{where}: [{key}] is not a number; give choices = [...] instead of a range")
    kind = "float" if type_name == "float" else "int"
    number = (int, float) if kind == "float" else (int,)
    low, high, log, step = spec.get("low"), spec.get("high"), spec.get("log", False), spec.get("step")
    for label, value in (("low", low), ("high", high)) + ((("step", step),) if step is not None else ()):
        if not isinstance(value, number) or isinstance(value, bool) or not math.isfinite(value):
            wanted = "a number" if kind == "float" else "an integer"
            raise UserError(f"{where}: [{key}] {label} must be {wanted} (got {value!r})")
    if not isinstance(log, bool):
        raise UserError(f"{where}: [{key}] log must be true or false (got {log!r})")
    checks = [
        (low < high, f"low must be below high (got {low} and {high})"),
        (not log or low > 0, f"a log range needs low > 0 (got {low})"),
        (step is None or step > 0, f"step must be > 0 (got {step})"),
        (step is None or not log, "a range cannot have both log and step"),
        (step is None or step <= high - low, f"step {step} is wider than the range"),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(f"{where}: [{key}] impossible range: {message}")
    return Param(key, kind, low, high, log, step)


def run_sweep(
    base: TrainConfig,
    trials: int,
    study: str = DEFAULT_STUDY,
    storage: str | None = None,
    space: tuple[Param, ...] = DEFAULT_SPACE,
    out: str | Path = DEFAULT_OUT,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run ``trials`` more trials of ``study`` (created if new, continued if not); return :func:`summary`.

    Each trial trains ``base`` with the sampled values into ``OUT/STUDY/trial-NNNN``. Bad input is
    refused before anything is written. Ctrl-C stops the running trial after its checkpoint and
    raises :class:`~cnnlab.errors.Interrupted`; running the sweep again continues the study.
    """
    import optuna

    if trials < 1:
        raise UserError(f"--trials must be ≥ 1 (got {trials})")
    _check_study_name(study)
    validate(base)
    for param in space:
        _param(param.name, _as_spec(param), base, "search space")
    out = Path(out)
    with _created(out) as folder:  # removed again if the storage cannot be opened
        opened = _open_storage(storage or sqlite_url(folder), create=True, out=out)
    with _quiet_optuna():
        study_obj = optuna.create_study(
            study_name=study, storage=opened, direction="maximize", load_if_exists=True,
            sampler=optuna.samplers.TPESampler(constant_liar=True),  # parallel workers avoid each other's trials
            pruner=optuna.pruners.MedianPruner(**PRUNER),
        )  # fmt: skip
    if study_obj.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise UserError(f"study {study!r} minimises its value; a cnnlab sweep maximises validation accuracy")
    keep_fixed_options(study_obj, fixed_options(base, space))
    (out / study).mkdir(parents=True, exist_ok=True)
    done = len(study_obj.get_trials(deepcopy=False))
    echo(f"study {study} ({done} trials so far): {trials} more over " + ", ".join(p.describe() for p in space))
    objective = _objective(base, space, out / study, echo)
    with _quiet_optuna():
        study_obj.optimize(objective, n_trials=trials, catch=(Diverged,))
    return summary(study_obj)


def fixed_options(base: TrainConfig, space: tuple[Param, ...]) -> dict[str, Any]:
    """The options every trial of a sweep shares: ``base``'s, less the searched ones and :data:`WHERE_OPTIONS`
    (``dataset`` as stored in runs: a ``folder:``/``csv:`` path made absolute)."""
    from cnnlab.data.registry import canonical_dataset

    searched = {p.name for p in space}
    options = {k: v for k, v in base.to_dict().items() if k not in searched and k not in WHERE_OPTIONS}
    if "dataset" in options:
        options["dataset"] = canonical_dataset(options["dataset"])
    return options


def keep_fixed_options(study: Any, fixed: dict[str, Any]) -> None:
    """Store ``fixed`` with a study that has none yet; refuse, in one line, a rerun whose fixed options differ
    from the stored ones (its trials would be compared with trials of another experiment)."""
    stored = study.user_attrs.get(FIXED_ATTR)
    if stored is None:
        study.set_user_attr(FIXED_ATTR, fixed)
        return
    changed = [k for k in sorted(set(stored) | set(fixed)) if stored.get(k) != fixed.get(k)]
    if changed:
        shown = ", ".join(
            f"--{k.replace('_', '-')} {_fmt(fixed.get(k))} (study: {_fmt(stored.get(k))})" for k in changed
        )
        raise UserError(
            f"study {study.study_name!r} was run with other fixed options: {shown}; its trials would mix with "
            "these: start another study with --study NAME, or repeat the study's options"
        )


def _as_spec(param: Param) -> dict[str, Any]:
    """A :class:`Param` back in space-file form (to check the default space with the same rules)."""
    if param.kind == "choice":
        return {"choices": list(param.choices)}
    spec: dict[str, Any] = {"low": param.low, "high": param.high, "log": param.log}
    return spec if param.step is None else {**spec, "step": param.step}


def _objective(base: TrainConfig, space: tuple[Param, ...], folder: Path, echo: Callable[[str], None]) -> Callable:
    """Optuna's objective: train one trial's run, report each epoch, return its best validation accuracy."""
    import optuna

    import cnnlab

    def objective(trial: optuna.Trial) -> float:
        params = {p.name: p.suggest(trial) for p in space}
        run_dir = folder / f"trial-{trial.number:04d}"
        trial.set_user_attr("run_dir", str(run_dir))
        shown = "  ".join(f"{k}={_fmt(v)}" for k, v in params.items())
        started = time.perf_counter()
        last_epoch = [0]

        def report(row: dict[str, Any]) -> None:
            epoch = int(row["epoch"])
            last_epoch[0] = epoch
            trial.report(float(row["val_acc"]), epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"val acc {100 * row['val_acc']:.2f}% at epoch {epoch} is below the median")

        cfg = base.replace(**params, progress=False)
        try:
            result = cnnlab.train(cfg, out=str(run_dir), on_epoch=report)
        except optuna.TrialPruned:
            runs.prune_run(run_dir, last_epoch[0])
            echo(
                f"trial {trial.number}  {shown}  pruned at epoch {last_epoch[0]}  {time.perf_counter() - started:.1f}s"
            )
            raise
        except Diverged as exc:  # its run says "failed" and why; the study counts it failed and goes on
            echo(f"trial {trial.number}  {shown}  diverged ({exc})")
            raise
        echo(
            f"trial {trial.number}  {shown}  val acc {100 * result.best_val_acc:.2f}%  "
            f"{time.perf_counter() - started:.1f}s"
        )
        return float(result.best_val_acc)

    return objective


def show_sweep(study: str = DEFAULT_STUDY, storage: str | None = None, out: str | Path = DEFAULT_OUT) -> dict[str, Any]:
    """The trials of an existing study (see :func:`summary`) and its plots, written to ``OUT/STUDY/``:
    ``history.png`` (Optuna's optimisation history) and ``importance.png`` (parameter importances;
    left out while fewer than two trials have finished)."""
    import optuna

    _check_study_name(study)
    out = Path(out)
    url = storage or sqlite_url(out)
    if storage is None and not (out / DB_NAME).is_file():
        raise UserError(f"no sweep in {out} (no {DB_NAME}); run cnnlab sweep first, or pass --out/--storage")
    opened = _open_storage(url, create=False, out=out)
    names = optuna.get_all_study_names(storage=opened)
    if study not in names:
        known = ", ".join(names) or "none"
        raise UserError(f"no study {study!r} in {_redacted(url)} (studies there: {known}); pass --study NAME")
    study_obj = optuna.load_study(study_name=study, storage=opened)
    with _quiet_optuna():
        optuna.storages.fail_stale_trials(study_obj)  # a killed process's trial counts as failed
    result = summary(study_obj)
    folder = out / study
    folder.mkdir(parents=True, exist_ok=True)
    result["plots"] = write_plots(study_obj, folder)
    return result


def summary(study: Any) -> dict[str, Any]:
    """``{"study", "trials": [{number, state, value, params, run_dir}], "best"}`` (best: None if no
    trial finished)."""
    import optuna

    trials = [
        {
            "number": t.number,
            "state": t.state.name,
            "value": t.value,
            "params": t.params,
            "run_dir": t.user_attrs.get("run_dir"),
            "epochs": len(t.intermediate_values),
        }
        for t in study.get_trials(deepcopy=False)
    ]
    complete = [t for t in trials if t["state"] == optuna.trial.TrialState.COMPLETE.name]
    best = max(complete, key=lambda t: t["value"]) if complete else None
    return {"study": study.study_name, "trials": trials, "best": best}


def write_plots(study: Any, folder: Path) -> dict[str, str | None]:
    """Optuna's optimisation-history and parameter-importance plots (its matplotlib backend) as PNGs."""
    import optuna
    from optuna.visualization import matplotlib as optuna_plots

    from cnnlab import plots

    finished = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    paths: dict[str, str | None] = {"history": None, "importance": None}
    with _quiet_optuna():
        if finished:
            ax = optuna_plots.plot_optimization_history(study, target_name="validation accuracy")
            paths["history"] = str(plots._save(ax.figure, folder / "history.png"))
        if len(finished) >= 2 and len({tuple(sorted(t.params.items())) for t in finished}) >= 2:
            ax = optuna_plots.plot_param_importances(study)
            paths["importance"] = str(plots._save(ax.figure, folder / "importance.png"))
    return paths


def format_summary(result: dict[str, Any]) -> str:
    """The trials as a table, then the best trial."""
    lines = [f"study {result['study']}: {len(result['trials'])} trials"]
    lines.append(f"{'#':>4}  {'state':<8}  {'val acc':>7}  {'epochs':>6}  params  (run directory)")
    for t in result["trials"]:
        value = f"{100 * t['value']:.2f}%" if t["value"] is not None else "-"
        params = "  ".join(f"{safe(k)}={safe(_fmt(v))}" for k, v in t["params"].items())  # values from a database
        lines.append(
            f"{t['number']:>4}  {t['state']:<8}  {value:>7}  {t['epochs']:>6}  {params}  ({safe(t['run_dir'])})"
        )
    best = result["best"]
    if best is None:
        lines.append("best: none finished yet")
    else:
        lines.append(f"best: trial {best['number']}, val acc {100 * best['value']:.2f}%, run {safe(best['run_dir'])}")
    return "\n".join(lines)


def sqlite_url(folder: Path) -> str:
    """The default storage: ``optuna.db`` in the sweep folder."""
    return f"sqlite:///{folder / DB_NAME}"


def _open_storage(url: str, create: bool, out: Path | None = None) -> Any:
    """An Optuna RDB storage with a heartbeat, or a one-line UserError if ``url`` cannot be opened.

    Without ``create`` a SQLite file must already exist (opening one would make an empty database). A trial
    found dead is marked failed in its run folder only if that is ``OUT/STUDY/trial-NNNN`` (none without ``out``)."""
    import optuna

    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
    except Exception as exc:
        raise UserError(f"--storage {url}: not a database URL ({_first_line(exc)})") from None
    is_sqlite = parsed.drivername.startswith("sqlite")
    if is_sqlite and parsed.database not in (None, "", ":memory:"):
        path = Path(parsed.database)
        if not create and not path.is_file():
            raise UserError(f"--storage {url}: {path} does not exist")
        if create and not path.parent.is_dir():
            raise UserError(f"--storage {url}: the folder {path.parent} does not exist")
    engine_kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}} if is_sqlite else {}
    for attempt in range(1, OPEN_ATTEMPTS + 1):
        try:
            with _quiet_optuna():
                return _rdb_storage(optuna, url, engine_kwargs, out)
        except Exception as exc:  # any driver's failure to connect (missing module, refused, bad file)
            if attempt < OPEN_ATTEMPTS and _schema_race(exc, is_sqlite):
                time.sleep(0.5 * attempt)
                continue
            raise UserError(f"--storage {_redacted(url)}: cannot open it ({_first_line(exc)})") from None
    raise AssertionError("unreachable")  # pragma: no cover


def _rdb_storage(optuna: Any, url: str, engine_kwargs: dict[str, Any], out: Path | None = None) -> Any:
    """Optuna's RDB storage with a heartbeat; a trial whose process died is marked failed in its run folder
    too (Optuna ≥ 4.9 names the callback ``heartbeat_stale_trial_callback``, older ones ``failed_trial_callback``)."""
    heartbeat = dict(heartbeat_interval=HEARTBEAT_S, grace_period=3 * HEARTBEAT_S)
    mark = functools.partial(mark_dead_trial, out=out)
    try:
        return optuna.storages.RDBStorage(
            url, engine_kwargs=engine_kwargs, heartbeat_stale_trial_callback=mark, **heartbeat
        )
    except TypeError:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, failed_trial_callback=mark, **heartbeat)


def mark_dead_trial(study: Any, trial: Any, out: Path | None = None) -> None:
    """Optuna's heartbeat found ``trial``'s process gone (killed) and failed the trial: say so in its run
    folder's ``config.json``, which still says "running". Only ``OUT/STUDY/trial-NNNN`` is touched: a
    database from elsewhere may name any folder as a trial's ``run_dir``."""
    run_dir = trial.user_attrs.get("run_dir")
    if out is None or not isinstance(run_dir, str) or not (Path(run_dir) / "config.json").is_file():
        return
    own = Path(out) / study.study_name / f"trial-{trial.number:04d}"
    if own.is_symlink() or Path(run_dir).resolve() != own.resolve():
        return
    if runs.is_running(Path(run_dir)):
        runs.mark_failed(
            Path(run_dir), "its sweep process stopped without finishing it (killed?); the study counts it failed"
        )


def _schema_race(exc: Exception, is_sqlite: bool) -> bool:
    """True for the errors of two processes creating a new database's tables at the same moment
    (the second one's insert of the schema version collides, or finds the SQLite file locked)."""
    from sqlalchemy.exc import IntegrityError, OperationalError

    return isinstance(exc, IntegrityError) or (is_sqlite and isinstance(exc, OperationalError))


@contextmanager
def _created(folder: Path) -> Iterator[Path]:
    """Make ``folder`` (and parents) for the block; if the block fails, remove what it made."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out {folder}: cannot write there ({exc.strerror or exc})") from None
    try:
        yield folder
    except BaseException:
        for path in missing:  # innermost first
            shutil.rmtree(path, ignore_errors=True)
        raise


@contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Optuna's log lines and experimental-feature warnings off for the block: the sweep prints one
    line per trial itself (a failed trial's included), and the heartbeat it relies on is marked
    experimental."""
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(level)


def _check_study_name(name: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", name):
        raise UserError(f"--study {name!r}: use letters, digits, '_', '-' and '.' (it names a folder)")


def _redacted(url: str) -> str:
    """``url`` without its password."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
