"""An analysis is one declaration: :class:`Analysis`.

Each module under ``mechrecall.findings`` declares one: its config (a frozen dataclass whose
defaults are the study's settings and whose fields become the CLI's options), what it reads and
writes in a run directory, its run-level computation (a thin wrapper around a pure function over a
``HookedTransformer`` and tensors), its typed result, the report section that sets the result
beside its control and the study's number, and the config ``mechrecall reproduce`` runs it with.
``mechrecall.registry`` lists them; ``reproduce``, the report and the CLI are built from that list.

:func:`execute` is the one way an analysis runs on a run directory: it validates the config,
checks the inputs (hashes and provenance), runs the computation, writes the result as
``<name>.json`` and records the provenance of everything written (the sha256 of each input and
the command that remakes it), so a later read of a stale output is an error naming that command.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mechrecall.errors import ArtifactError, ConfigError
from mechrecall.results import Result
from mechrecall.runs import Run, open_run


def option(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:
    """A config field that is also a CLI option (``--field-name``) with this help."""
    metadata = {"help": help, "choices": choices}
    if isinstance(default, (list, dict, set)):
        raise TypeError("config defaults must be immutable (use a tuple)")
    return dataclasses.field(default=default, metadata=metadata)


def check_choices(config: Any) -> None:
    """Refuse a value outside a field's choices, with the choices in the message."""
    for f in dataclasses.fields(config):
        choices = f.metadata.get("choices")
        if choices and getattr(config, f.name) not in choices:
            raise ConfigError(f"--{f.name.replace('_', '-')} {getattr(config, f.name)!r}: choose one of {', '.join(choices)}")


@dataclass(frozen=True)
class Analysis:
    name: str  # CLI command, reproduce step, result file stem
    summary: str  # one line for --help
    config: type  # frozen dataclass, fields declared with ``option``
    result: type[Result]
    reads: Callable[[Any], tuple[str, ...]]  # artifacts of the run it reads, given its config
    run: Callable[[Run, Any, str, bool], Result]  # (run, config, device, progress) → result; writes its extra artifacts
    writes: Callable[[Any], tuple[str, ...]] = lambda config: ()  # artifacts besides <name>.json
    section: Callable[[Any], Any] | None = None  # Groups → Section | None
    preconditions: Callable[[Any], list[Any]] | None = None  # Groups → the study's precondition rows it measures
    from_study: Callable[[Any], Any] | None = None  # StudyConfig → config; None: not a step of reproduce
    describe: Callable[[Any], list[str]] | None = None  # result → lines for the terminal
    example: str = ""  # one example command line

    @property
    def result_file(self) -> str:
        return f"{self.name}.json"

    def outputs(self, config: Any) -> tuple[str, ...]:
        return (self.result_file, *self.writes(config))


def validate(config: Any) -> None:
    check_choices(config)
    if hasattr(config, "validate"):
        config.validate()


def execute(analysis: Analysis, path: Path | str, config: Any, device: str | None = None, progress: bool = False) -> Result:
    """Run ``analysis`` on the run at ``path`` and record what it wrote (see the module doc)."""
    from mechrecall.runs import resolve_device

    validate(config)
    device = resolve_device(device)
    run = open_run(path)
    if not run.is_trained:
        raise ArtifactError(f"{run.path} has no fine-tuned model: finish `mechrecall train` for it first")
    reads = analysis.reads(config)
    for name in reads:
        if name not in run.directory.manifest["files"]:
            raise ArtifactError(f"{run.path} has no {name}: {producer_hint(name, run.path)} first")
        run.directory.verify(name)  # intact and not stale
    inputs = run.directory.input_hashes(list(reads))
    result = analysis.run(run, config, device, progress)
    run.directory.write_json(analysis.result_file, result.to_json())
    command = f"mechrecall {analysis.name} {run.path}"
    for written in analysis.outputs(config):
        run.directory.set_provenance(written, inputs, command)
    return result


def producer_hint(artifact: str, path: Path) -> str:
    """What makes ``artifact`` in a run, as a command to run."""
    from mechrecall.registry import ANALYSES
    from mechrecall.runs import TRAINING_TRACE

    if artifact == TRAINING_TRACE:
        return f"train the run with the study's trace (`mechrecall train … --trace-individuals 20`, or `mechrecall reproduce`), or use `--trace posthoc` after `mechrecall trace {path}`"
    for analysis in ANALYSES:
        try:
            made = analysis.outputs(analysis.config())
        except Exception:  # noqa: BLE001 - a config without defaults: skip it
            continue
        if artifact in made:
            return f"run `mechrecall {analysis.name} {path}`"
    return "finish `mechrecall train` for it"


def load_result(run: Run, analysis: Analysis) -> Result | None:
    """The analysis' result stored in the run, or None when it has not run there."""
    if analysis.result_file not in run.directory.manifest["files"]:
        return None
    return analysis.result.from_json(run.directory.read_json(analysis.result_file), source=str(run.path / analysis.result_file))
