"""``mechrecall``: typer commands that parse options and call the library.

Any :class:`mechrecall.MechrecallError` becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import enum
import functools
import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from typer.core import TyperGroup
from rich.console import Console
from rich.table import Table

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

class _OneLineUsageErrors(TyperGroup):
    """A bad option or argument is one `error:` line and exit code 2 wherever the command runs
    (the shell through ``main``, or click's test runner), not click's three-line usage block."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:  # ``main`` below handles errors itself
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        usage_error = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except usage_error as error:
            _print_usage_error(error)
            sys.exit(2)
        except (typer.Abort, KeyboardInterrupt):
            code = 130
        sys.exit(code if isinstance(code, int) else 0)


def _print_usage_error(error: Any) -> None:
    where = error.ctx.command_path if error.ctx else "mechrecall"
    error_console.print(f"[red]error:[/red] {error.format_message()} (see `{where} --help`)", highlight=False, soft_wrap=True)


app = typer.Typer(
    cls=_OneLineUsageErrors,
    name="mechrecall",
    help="Mechanistic interpretability of fact recall: synthetic biographies, mixed vs two-stage training.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
# wide enough for the accuracy table when output goes to a file or a pipe
console = Console(soft_wrap=True) if sys.stdout.isatty() else Console(width=160, soft_wrap=True)
error_console = Console(stderr=True, soft_wrap=True)


# ---- choices: shown in --help and checked before any import of torch ------------------------


def _choices(name: str, values: tuple[str, ...]) -> Any:
    """A str enum whose members are ``values``: typer lists them in --help and refuses others."""
    return enum.Enum(name, {value: value for value in values}, type=str)


def _value(choice: Any) -> Any:
    return choice.value if isinstance(choice, enum.Enum) else choice


# kept in step with mechrecall.config (tests/test_cli.py checks it), not imported: --help stays fast
Preset = _choices("Preset", ("micro", "tiny", "small", "paper"))
Strategy = _choices("Strategy", ("mixed", "two-stage", "bio"))
Population = _choices("Population", ("all", "a", "b"))
PopulationSplit = _choices("PopulationSplit", ("last-name", "person"))
Dtype = _choices("Dtype", ("float32", "bfloat16", "float16"))
DecayTo = _choices("DecayTo", ("zero", "base"))
WhichModel = _choices("WhichModel", ("tuned", "base"))
ExportFormat = _choices("ExportFormat", ("hf",))
F = TypeVar("F", bound=Callable[..., Any])


def reports_errors(command: F) -> F:
    """Turn library errors into one clear line and exit code 2 (no traceback)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from mechrecall.errors import MechrecallError

        try:
            return command(*args, **kwargs)
        except MechrecallError as error:
            error_console.print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _quiet_libraries() -> None:
    import datasets
    import transformers

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()


@app.command()
@reports_errors
def data(
    out: Path = typer.Option(..., "--out", help="world directory to write"),
    preset: Preset = typer.Option("tiny", help="preset whose world settings are the defaults"),
    people: int | None = typer.Option(None, help="number of people [preset: tiny 1,000; paper 10,000]"),
    seed: int | None = typer.Option(None, help="world seed"),
    bio_per_person: int | None = typer.Option(None, "--bio-per-person", help="BIO texts per person (fresh templates each)"),
    permute: bool | None = typer.Option(None, "--permute/--no-permute", help="shuffle sentence order in each BIO"),
    fullname: bool | None = typer.Option(None, "--fullname/--pronoun", help="full name in every sentence"),
    qa_id_fraction: float | None = typer.Option(None, "--qa-id-fraction", help="share of people whose QA is trained on"),
    population: Population | None = typer.Option(None, help="two disjoint name populations a and b (a base pre-trained on b never saw a person of a), or all"),
    population_split: PopulationSplit | None = typer.Option(
        None, "--population-split", help="how a and b are kept apart: last-name (disjoint last names) or person (disjoint full names, every name token shared)"),
    overwrite: bool = typer.Option(False, help="replace an existing --out"),
) -> None:
    """Sample a synthetic biography world and save it (DatasetDict + tokenizer).

    Example: mechrecall data --preset tiny --population a --out runs/world (the tiny world: 1,000 people, one BIO each, QA of 90% trained)"""
    import mechrecall as mr
    from mechrecall.config import with_overrides

    _quiet_libraries()
    preset, population, population_split = _value(preset), _value(population), _value(population_split)
    config = with_overrides(
        mr.get_preset(preset).world, people=people, seed=seed, bio_per_person=bio_per_person, permute=permute,
        fullname=fullname, qa_id_fraction=qa_id_fraction, population=population, population_split=population_split,
    )
    config.validate()
    world = mr.create_world(config)
    directory = mr.save_world(world, out, overwrite=overwrite)
    rows = ", ".join(f"{split} {len(rows):,}" for split, rows in world.dataset.items())
    console.print(f"world {directory.path}: {rows}; fingerprint {world.fingerprint}")


@app.command()
@reports_errors
def train(
    world: Path = typer.Argument(..., help="world directory (from `mechrecall data`)"),
    out: Path = typer.Option(..., "--out", help="run directory to write (an unfinished run of the same config resumes)"),
    strategy: Strategy = typer.Option("mixed", help="mixed, two-stage, or bio (BIO alone: a recipe for a base)"),
    preset: Preset = typer.Option("tiny", help="model and training defaults (see `mechrecall presets`)"),
    model: str | None = typer.Option(None, help="a size built here (micro, tiny, small), a run directory (its tuned weights as θ_pre), or a checkpoint dir / cached hub id"),
    model_seed: int | None = typer.Option(None, "--model-seed", help="initialisation seed of a model built here"),
    dtype: Dtype | None = typer.Option(None, help="the weights' dtype"),
    steps: int | None = typer.Option(None, help="mixed: training steps"),
    qa_share: float | None = typer.Option(None, "--qa-share", help="mixed: share of QA examples in a batch, in (0, 1)"),
    bio_steps: int | None = typer.Option(None, "--bio-steps", help="two-stage: BIO steps (a cap when --bio-loss is given)"),
    bio_loss: float | None = typer.Option(None, "--bio-loss", help="two-stage: end the BIO stage once its mean loss is below"),
    qa_steps: int | None = typer.Option(None, "--qa-steps", help="two-stage: QA steps"),
    batch_size: int | None = typer.Option(None, "--batch-size"),
    lr: float | None = typer.Option(None),
    weight_decay: float | None = typer.Option(None, "--weight-decay"),
    warmup_steps: int | None = typer.Option(None, "--warmup-steps"),
    seed: int | None = typer.Option(None, help="training seed (batch order)"),
    max_steps: int | None = typer.Option(None, "--max-steps", help="cap the total steps (smoke runs)"),
    checkpoint_every: int | None = typer.Option(None, "--checkpoint-every"),
    device: str | None = typer.Option(None, help="cpu | cuda (default: cuda when available)"),
    qa_lr: float | None = typer.Option(None, "--qa-lr", help="two-stage: the QA stage's learning rate (default: --lr)"),
    qa_weight_decay: float | None = typer.Option(None, "--qa-weight-decay", help="two-stage: the QA stage's weight decay"),
    eval_every: int | None = typer.Option(None, "--eval-every", help="measure exact match every N steps (always at each stage's end)"),
    trace_individuals: int | None = typer.Option(None, "--trace-individuals", help="accumulate the study's gradient trace (Σ lr·g per task, signed) of N QA-ID people at every step"),
    trace_all: bool = typer.Option(False, "--trace-all", help="accumulate the trace over every training example instead"),
    decay_to: DecayTo | None = typer.Option(None, "--decay-to", help="zero (AdamW) or base: weight decay toward θ_pre (L2-SP)"),
    l1_to_base: float | None = typer.Option(None, "--l1-to-base", help="ℓ1 pull toward θ_pre (soft threshold lr·λ per step; sparse θ − θ_pre, as for grafting)"),
    overwrite: bool = typer.Option(False, help="replace an existing --out"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Fine-tune a model on a world with the mixed or two-stage strategy, then evaluate it.

    Example: mechrecall train runs/world --strategy mixed --model runs/base --trace-individuals 20 --out runs/mix"""
    import mechrecall as mr
    from mechrecall.config import with_overrides

    _quiet_libraries()
    strategy, preset, dtype, decay_to = _value(strategy), _value(preset), _value(dtype), _value(decay_to)
    study = mr.get_preset(preset)
    model_config = with_overrides(study.model, name=model, seed=model_seed, dtype=dtype)
    train_config = with_overrides(
        study.train, strategy=strategy, steps=steps, qa_share=qa_share, bio_steps=bio_steps, bio_loss=bio_loss,
        qa_steps=qa_steps, batch_size=batch_size, lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps,
        seed=seed, max_steps=max_steps, checkpoint_every=checkpoint_every, qa_lr=qa_lr, qa_weight_decay=qa_weight_decay,
        eval_every=eval_every, decay_to=decay_to, l1_to_base=l1_to_base,
    )
    train_config.validate()
    trace = None
    if trace_individuals is not None or trace_all:
        from mechrecall.errors import ConfigError
        from mechrecall.influence import TraceConfig

        if trace_individuals is not None and trace_all:
            raise ConfigError("give --trace-individuals N or --trace-all, not both")
        trace = TraceConfig(individuals=None if trace_all else trace_individuals, split="qa_id", measure="lr-grad")
        trace.validate()
    run = mr.train_run(
        world, out, model_config, train_config, preset=preset, overwrite=overwrite, device=device, progress=progress, trace=trace
    )
    summary = run.directory.manifest.get("training", {})
    console.print(f"run {run.path}: {summary.get('steps')} steps in {summary.get('seconds')} s of training")
    print_metrics({str(run.path): run.metrics()})


@app.command("eval")
@reports_errors
def evaluate(
    runs: list[Path] = typer.Argument(..., help="one or more run directories"),
    which: WhichModel = typer.Option("tuned", help="tuned (θ_task) or base (θ_pre)"),
    batch_size: int | None = typer.Option(None, "--batch-size"),
    device: str | None = typer.Option(None),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
) -> None:
    """Greedy exact-match accuracy: BIO completion, QA-ID and QA-OOD, overall and per attribute.

    Example: mechrecall eval runs/mix runs/two"""
    import mechrecall as mr
    from mechrecall.runs import resolve_device

    resolve_device(device)
    _quiet_libraries()
    which = _value(which)
    results = {str(run): mr.evaluate_run(run, which=which, batch_size=batch_size, device=device) for run in runs}
    if as_json:
        sys.stdout.write(json.dumps(results, indent=2) + "\n")
    else:
        print_metrics(results)


@app.command()
@reports_errors
def export(
    run: Path = typer.Argument(..., help="a trained run directory"),
    out: Path = typer.Argument(..., help="a new folder for the checkpoint (never overwritten)"),
    format: ExportFormat = typer.Option("hf", "--format", help="hf: a Hugging Face checkpoint (safetensors, config, tokenizer)"),
    which: WhichModel = typer.Option("tuned", "--which", help="tuned (θ_task) or base (θ_pre)"),
) -> None:
    """Write a run's model as a Hugging Face checkpoint that transformers and nnsight open.

    GPT-NeoX layout for models built here, the source layout (GPT-NeoX or Llama) for runs tuned from
    a checkpoint; the export is loaded back and its logits checked against the run's before it appears.

    Example: mechrecall export runs/micro/s0/mixed --format hf runs/micro-hf"""
    from mechrecall.export import export_run

    _quiet_libraries()
    result = export_run(run, out, which=_value(which))
    console.print(f"written: {result.path} ({result.layout}, {result.parameters:,} parameters; max |Δlogit| against the run {result.max_logit_difference:.1e})")


@app.command()
@reports_errors
def report(
    runs: list[Path] = typer.Argument(..., help="runs to compare (e.g. mixed and two-stage)"),
    out: Path = typer.Option(..., "--out", help="folder for report.md and report.html (never a default: the repository's figures/ is written only when named)"),
) -> None:
    """Compare runs beside the study's numbers: a section per finding (markdown, HTML, figures).

    Several runs of one strategy are seeds: values become mean ± spread.

    Example: mechrecall report runs/mix runs/two --out runs/report"""
    from mechrecall.artifacts import check_output_path
    from mechrecall.errors import RunDirError
    from mechrecall.report import group_runs, write_report

    check_output_path(out)
    if out.exists() and not out.is_dir():
        raise RunDirError(f"--out {out} is a file: give a folder for report.md and report.html")
    _quiet_libraries()
    groups = group_runs(runs)
    markdown, page = write_report(groups, out)
    print_findings(groups)
    console.print(f"written: {markdown}, {page}")


def print_findings(groups: dict[str, Any]) -> None:
    """The study's findings and their verdicts (each row, its control and its reason are in the report)."""
    from mechrecall.report import sections, summary

    table = Table(title="what these runs reproduce (every row, its control and the reason: report.md)")
    for column in ("finding", "verdict", "why"):
        table.add_column(column)
    for finding, verdict in summary(sections(groups)):
        table.add_row(finding, verdict.kind, verdict.reason)
    console.print(table)


@app.command()
@reports_errors
def reproduce(
    preset: Preset = typer.Option("tiny", help="the study's settings (see `mechrecall presets`)"),
    seeds: int | None = typer.Option(None, help="repeat the training-dependent steps over seeds 0 … N−1 (default 1); the report gives mean ± spread"),
    seed: list[int] = typer.Option([], "--seed", help="run these seeds instead of 0 … N−1 (repeatable), e.g. a seed nobody tuned on"),
    out: Path | None = typer.Option(None, "--out", help="study folder (default: runs/<preset>); a second run reuses every cached step"),
    set_: list[str] = typer.Option([], "--set", help="change a setting of the preset: key=value (world, model, training or analysis field), repeatable"),
    figures: Path | None = typer.Option(None, "--figures", help="also copy report.md, report.html and the figures here (e.g. figures/)"),
    device: str | None = typer.Option(None, help="cpu | cuda (default: cuda when available)"),
    jobs: int | None = typer.Option(None, help="steps side by side, one process each: trainings, then each run's analyses as its training ends (default: 2 on a multi-core CPU, 1 on a GPU)"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """The whole study for both strategies — data, training, evaluation, trace, shared sets, grafting,
    ablations with controls, head rankings and curves, attention, patching — and its report.

    Every step is cached by its inputs: a second run is a no-op, a changed option reruns only what
    depends on it, an interrupted run resumes.

    Example: mechrecall reproduce --preset tiny --seeds 3"""
    from mechrecall.config import parse_overrides
    from mechrecall.errors import ConfigError
    from mechrecall.report import group_runs
    from mechrecall.reproduce import (
        ReproduceConfig,
        check_destination,
        export_report,
        run_path,
    )
    from mechrecall.reproduce import reproduce as run_study

    _quiet_libraries()
    preset = _value(preset)
    if seed and seeds is not None:
        raise ConfigError("give --seeds N or --seed S (repeatable), not both")
    if seeds is not None and seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {seeds}")
    chosen = tuple(seed) if seed else tuple(range(seeds or 1))
    config = ReproduceConfig(preset=preset, seeds=chosen, overrides=parse_overrides(set_))
    config.validate()
    if figures is not None:
        check_destination(figures)
    folder = out or Path("runs") / preset
    outcomes = run_study(folder, config, device=device, progress=progress, console=error_console, jobs=jobs)
    ran = [o for o in outcomes if o.status == "ran"]
    if not ran:
        console.print(f"nothing to do: all {len(outcomes)} steps are cached in {folder}")
    else:
        console.print(f"{len(ran)} steps ran ({sum(o.seconds for o in ran):.0f} s), {len(outcomes) - len(ran)} were cached")
    print_findings(group_runs([run_path(folder, s, strategy) for s in config.seeds for strategy in config.strategies]))
    console.print(f"report: {folder / 'report.md'}, {folder / 'report.html'}")
    if figures is not None:
        written = export_report(folder, figures)
        console.print(f"copied {len(written)} files to {figures}")


@app.command()
@reports_errors
def presets(show: str | None = typer.Option(None, "--show", help="list every setting of this preset that --set accepts, with its value")) -> None:
    """List the named presets; with --show NAME, every setting `reproduce --set` accepts.

    Example: mechrecall presets --show tiny"""
    import dataclasses

    from mechrecall.config import PRESETS, get_preset

    if show is None:
        for name, study in PRESETS.items():
            console.print(f"[bold]{name}[/bold]: {study.description}")
        return
    study = get_preset(show)
    table = Table(title=f"{show}: settings for `mechrecall reproduce --preset {show} --set KEY=VALUE`")
    for column in ("part", "key", "value"):
        table.add_column(column)
    for part in ("world", "model", "train", "analysis", "base"):
        config = getattr(study, part)
        for f in dataclasses.fields(config):
            if f.name in ("seed", "strategy"):
                continue  # seeds come from --seeds / --seed; reproduce trains both strategies
            key = ("base" if f.name == "recipe" else f"base_{f.name}") if part == "base" else f.name
            table.add_row(part, key, json.dumps(getattr(config, f.name)))
    console.print(table)


def _version(value: bool) -> None:
    if value:
        from mechrecall import __version__

        console.print(f"mechrecall {__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="print the version and exit")) -> None:
    """Mechanistic interpretability of fact recall: synthetic biographies, mixed vs two-stage training."""


def print_metrics(results: dict[str, dict[str, Any]]) -> None:
    """One table: a row per run and metric, overall accuracy then each attribute's."""
    from mechrecall.data.templates import ATTRIBUTES

    table = Table(title="greedy exact-match accuracy (%)")
    for column in ("run", "metric", "n", "overall", *ATTRIBUTES):
        table.add_column(column, justify="left" if column in ("run", "metric") else "right")
    for run, metrics in results.items():
        for metric, values in metrics.items():
            by_attribute = [f"{100 * values['by_attribute'].get(a, float('nan')):.1f}" for a in ATTRIBUTES]
            table.add_row(run, metric, f"{values['n']:,}", f"{100 * values['accuracy']:.1f}", *by_attribute)
    console.print(table)


# ---- one command per analysis of the registry --------------------------------------------------


def _parse_optional(kind: Any, text: str, flag: str) -> Any:
    from mechrecall.errors import ConfigError

    if text.strip().lower() in ("none", "null", ""):
        return None
    try:
        return kind(text)
    except ValueError:
        raise ConfigError(f"{flag} {text!r} is not {'an integer' if kind is int else 'a number'} (or none)") from None


def _parse_numbers(text: str, flag: str) -> tuple[float, ...]:
    from mechrecall.errors import ConfigError

    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"{flag} {text!r} is not a comma-separated list of numbers like 5,10,20") from None


def _analysis_command(analysis: Any) -> None:
    """A command whose options are the analysis config's fields: ``mechrecall NAME RUN [--field …]``."""
    import dataclasses
    import enum
    import inspect
    import typing

    hints = typing.get_type_hints(analysis.config)
    parameters = [inspect.Parameter("run", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Path,
                                    default=typer.Argument(..., help="a trained run directory"))]
    converters: dict[str, Callable[[Any], Any]] = {}
    for f in dataclasses.fields(analysis.config):
        kind, flag, help_text = hints[f.name], "--" + f.name.replace("_", "-"), f.metadata.get("help", "")
        choices = f.metadata.get("choices")
        if choices:
            choice = enum.Enum(f"{analysis.name}_{f.name}", [(c, c) for c in choices], type=str)  # type: ignore[misc]
            annotation, default = choice, typer.Option(choice(f.default), flag, help=help_text)
            converters[f.name] = lambda value: value.value
        elif kind is bool:
            annotation, default = bool, typer.Option(f.default, f"{flag}/--no-{flag[2:]}", help=help_text)
        elif kind is int:  # seeds, indices and counts: bounded, so a typo cannot ask for 10^20 draws
            low, high = (0, 2**63 - 1) if f.name in ("seed", "example") else (1, 1_000 if "draws" in f.name else 1_000_000)
            annotation, default = int, typer.Option(f.default, flag, help=help_text, min=low, max=high)
        elif kind in (float, str):
            annotation, default = kind, typer.Option(f.default, flag, help=help_text)
        elif typing.get_origin(kind) is tuple:
            annotation, default = str, typer.Option(",".join(f"{x:g}" for x in f.default), flag, help=help_text + " (comma-separated)")
            converters[f.name] = lambda value, flag=flag: _parse_numbers(value, flag)
        else:  # an optional number
            inner = next(a for a in typing.get_args(kind) if a is not type(None))
            annotation, default = str, typer.Option("none" if f.default is None else f"{f.default:g}", flag, help=help_text if "none" in help_text else help_text + " (none: off)")
            converters[f.name] = lambda value, inner=inner, flag=flag: _parse_optional(inner, value, flag)
        parameters.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default))
    parameters += [
        inspect.Parameter("device", inspect.Parameter.KEYWORD_ONLY, annotation=str | None, default=typer.Option(None, help="cpu | cuda (default: cuda when available)")),
        inspect.Parameter("progress", inspect.Parameter.KEYWORD_ONLY, annotation=bool, default=typer.Option(True, "--progress/--no-progress")),
        inspect.Parameter("as_json", inspect.Parameter.KEYWORD_ONLY, annotation=bool, default=typer.Option(False, "--json", help="print the result as JSON")),
    ]

    def command(**options: Any) -> None:
        from mechrecall.analysis import execute

        _quiet_libraries()
        run, device, progress, as_json = options.pop("run"), options.pop("device"), options.pop("progress"), options.pop("as_json")
        values = {name: converters.get(name, lambda v: v)(value) for name, value in options.items()}
        result = execute(analysis, run, analysis.config(**values), device=device, progress=progress)
        if as_json:
            sys.stdout.write(json.dumps(result.to_json(), indent=2) + "\n")
            return
        for line in analysis.describe(result) if analysis.describe else []:
            console.print(line, highlight=False)
        console.print(f"written: {Path(run) / analysis.result_file}", highlight=False)

    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in parameters}
    command.__name__ = analysis.name.replace("-", "_")
    command.__doc__ = f"{analysis.summary}\n\nExample: {analysis.example}"
    wrapped = reports_errors(command)
    app.command(analysis.name, help=command.__doc__)(wrapped)
    if analysis.name == "heads":
        app.command("ablate-heads", help=command.__doc__.replace("mechrecall heads", "mechrecall ablate-heads"))(wrapped)


def _register_analyses() -> None:
    from mechrecall.registry import ANALYSES

    for analysis in ANALYSES:
        _analysis_command(analysis)


_register_analyses()


@app.command()
@reports_errors
def pretrain(
    out: Path = typer.Option(..., "--out", help="run directory for the base (an unfinished one of the same settings resumes)"),
    preset: Preset = typer.Option("tiny", help="the preset whose base to pre-train (see `mechrecall presets`)"),
    set_: list[str] = typer.Option([], "--set", help="change a setting: base=bio, base_steps=4000, name=tiny-h16, … (repeatable)"),
    device: str | None = typer.Option(None, help="cpu | cuda (default: cuda when available)"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Pre-train θ_pre: a model of the preset's size on its own world of population b, which the
    studied world (population a) never shares a person with.

    Example: mechrecall pretrain --preset tiny --out runs/base"""
    from mechrecall.base import pretrain as pretrain_base
    from mechrecall.config import get_preset, override_study, parse_overrides
    from mechrecall.errors import ConfigError

    _quiet_libraries()
    preset = _value(preset)
    study = override_study(get_preset(preset), parse_overrides(set_))
    if not study.base.pretrained:
        raise ConfigError(f"the {preset} preset's base is a random initialisation: pass --set base=bio (or mixed) to pre-train one")
    run = pretrain_base(study, out, device=device, progress=progress)
    console.print(f"base {run.path}: {run.directory.manifest['training']['steps']} steps in {run.directory.manifest['training']['seconds']} s")
    print_metrics({str(run.path): run.metrics()})


def main(argv: list[str] | None = None) -> None:
    """The ``mechrecall`` command (``argv``: its arguments, default the process's)."""
    # typer vendors its own click: take its usage-error class from the one it exports
    usage_error = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")

    def terminated(signum: int, frame: object) -> None:  # `kill`: stop as Ctrl-C does, workers included
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, terminated)
    try:
        code = app(args=argv, standalone_mode=False)
    except usage_error as error:  # a bad option or argument: one line, exit code 2
        _print_usage_error(error)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        code = 130
    if code == 130:  # typer turns Ctrl-C into exit code 130
        error_console.print("interrupted: finished steps are kept; run the same command again to resume", highlight=False)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
