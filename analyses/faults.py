"""Every command against bad values of every option: the fault table of the README.

    python analyses/faults.py [--markdown faults.md]

For each command of the CLI (the registry's analyses included) and each of its options, it tries
the values a careless, unlucky or hostile user could give — by the option's kind: negative, huge,
non-numeric, NaN and infinite numbers, unknown choices, paths that are missing, files, or lie under
a file — on a small real world and run it makes first, beside a folder of user files. A case is
*clean* when it ends with exit code 2 and exactly one ``error:`` line, or is accepted (exit 0);
it is a *traceback* when Python's traceback shows, and *lost files* when any file outside the
command's own new output changed or vanished. It prints the counts and the failing cases; the
test suite runs the same table (``tests/test_faults.py``).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

warnings.filterwarnings("ignore")

NUMBERS = {int: ("-1", "abc", "99999999999999999999"), float: ("nan", "inf", "-1", "abc")}
SKIPPED = {"help", "progress", "as_json", "set_"}  # flags and the free-form --set (tested on its own)


@dataclass(frozen=True)
class Case:
    command: str
    option: str
    value: str
    args: tuple[str, ...]


@dataclass(frozen=True)
class Outcome:
    case: Case
    exit_code: int
    clean: bool
    traceback: bool
    lost: tuple[str, ...]


def make_fixtures(root: Path) -> dict[str, Path]:
    """A world, a trained run with the study's trace and its shared set, a user's folder and a file."""
    import mechrecall as mr
    from mechrecall.analysis import execute
    from mechrecall.registry import get

    world = root / "world"
    mr.save_world(mr.create_world(mr.WorldConfig(people=12, seed=3)), world)
    run = mr.train_run(world, root / "run", mr.ModelConfig("micro"), mr.TrainConfig(steps=6, batch_size=4, warmup_steps=1),
                       device="cpu", progress=False, trace=mr.TraceConfig(individuals=2))
    shared = get("shared")
    execute(shared, run.path, shared.config(fraction=0.05, null_draws=1), device="cpu")
    user = root / "notes"
    user.mkdir()
    (user / "todo.txt").write_text("keep me")
    (root / "a-file").write_text("mine")
    return {"world": world, "run": run.path, "user": user, "file": root / "a-file"}


def base_args(command: str, fixtures: dict[str, Path], out: Path) -> list[str]:
    """Valid arguments for a quick run of ``command`` (each bad value replaces one of them or is added)."""
    run, world = str(fixtures["run"]), str(fixtures["world"])
    quick_train = ["--model", "micro", "--steps", "2", "--batch-size", "2", "--no-progress"]
    return {
        "data": ["--people", "4", "--out", str(out)],
        "train": [world, "--out", str(out), *quick_train],
        "eval": [run],
        "report": [run, "--out", str(out)],
        "reproduce": ["--preset", "micro", "--out", str(out), "--no-progress"],
        "presets": [],
        "pretrain": ["--preset", "micro", "--out", str(out), "--no-progress"],
        "export": [run, str(out)],
    }.get(command, [run, "--no-progress"] if command not in ("presets",) else [])


def bad_values(name: str, default: object, fixtures: dict[str, Path]) -> list[str]:
    missing, under_file = str(fixtures["user"] / "missing" / "x"), str(fixtures["file"] / "sub")
    if name in ("out", "figures"):
        return [str(fixtures["file"]), under_file, str(fixtures["user"]), ".", "x" * 300]
    if name in ("world", "run", "runs"):
        return [missing, str(fixtures["file"]), str(fixtures["user"])]
    if name == "model":
        return [missing, str(fixtures["user"]), "no/such-model"]
    if name == "device":
        return ["bogus", "mps", "meta", "cuda:7"]
    if isinstance(default, bool):
        return []
    if hasattr(default, "value"):  # an Enum of choices
        return ["bogus"]
    if isinstance(default, int):
        return list(NUMBERS[int])
    if isinstance(default, float):
        return list(NUMBERS[float])
    return ["bogus", "-1", "nan", ""]


def cases(fixtures: dict[str, Path], scratch: Path) -> list[Case]:
    import typer

    from mechrecall_cli.app import app

    group = typer.main.get_command(app)
    found = []
    for command, click_command in group.commands.items():
        if command in ("ablate-heads",):  # the same command as heads
            continue
        for parameter in click_command.params:
            if parameter.name in SKIPPED or getattr(parameter, "is_flag", False):
                continue
            for value in bad_values(parameter.name, parameter.default, fixtures):
                out = scratch / f"out-{len(found)}"
                args = base_args(command, fixtures, out)
                if parameter.param_type_name == "argument":
                    arguments = [p for p in click_command.params if p.param_type_name == "argument"]
                    position = arguments.index(parameter)
                    args = [*args[:position], value, *args[position + 1:]]
                else:
                    flag = parameter.opts[0]
                    if flag in args:
                        position = args.index(flag)
                        args = args[:position] + args[position + 2:]
                    args = [*args, flag, value]
                found.append(Case(command, parameter.name, value, (command, *args)))
    return found


def snapshot(folders: list[Path]) -> dict[str, bytes]:
    files = {}
    for folder in folders:
        for path in sorted(folder.rglob("*")) if folder.is_dir() else [folder]:
            if path.is_file():
                files[str(path)] = path.read_bytes()
    return files


def invoke(args: list[str]) -> tuple[int, str, BaseException | None]:
    """Run the ``mechrecall`` entry point in this process as the shell would: its exit code, what it
    printed (stdout and stderr) and any exception that escaped it."""
    import contextlib
    import io

    from mechrecall_cli.app import main

    buffer = io.StringIO()
    escaped: BaseException | None = None
    code = 0
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        try:
            main(args)
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
            if code == 130:  # Ctrl-C or `kill` reached the command: stop the table, not just this case
                raise KeyboardInterrupt from None
        except BaseException as error:  # noqa: BLE001 - a traceback is what this table counts
            import traceback

            escaped, code = error, 1
            buffer.write("Traceback (most recent call last):\n" + "".join(traceback.format_exception(error)))
    return code, buffer.getvalue(), escaped


def run_case(case: Case, fixtures: dict[str, Path]) -> Outcome:
    guarded = [fixtures["world"], fixtures["run"], fixtures["user"], fixtures["file"]]
    before = snapshot(guarded)
    exit_code, output, escaped = invoke(list(case.args))
    after = snapshot(guarded)
    # a command may add its own outputs inside the run (an analysis' result): only changes and losses count
    lost = tuple(sorted(name for name, data in before.items() if after.get(name) != data
                        and not name.endswith(("manifest.json",)) and "/run/" not in name + "/"))
    lines = [line for line in output.strip().splitlines() if line.strip()]
    traceback = "Traceback" in output or escaped is not None
    clean = (exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:")) or exit_code == 0
    return Outcome(case, exit_code, clean and not traceback, traceback, lost)


def run_all(root: Path, commands: set[str] | None = None, verbose: bool = False) -> list[Outcome]:
    import os

    os.chdir(root)  # "." and relative names land in the scratch folder, never in the caller's
    fixtures = make_fixtures(root)
    scratch = root / "scratch"
    scratch.mkdir()
    outcomes = []
    chosen = [case for case in cases(fixtures, scratch) if commands is None or case.command in commands]
    for number, case in enumerate(chosen, 1):
        outcomes.append(run_case(case, fixtures))
        if verbose:
            outcome = outcomes[-1]
            verdict = "ok" if outcome.clean and not outcome.lost else "FAILED"
            print(f"[{number}/{len(chosen)}] {verdict} exit {outcome.exit_code}: {' '.join(case.args)[:160]}", flush=True)
    shutil.rmtree(scratch, ignore_errors=True)
    return outcomes


def summary(outcomes: list[Outcome]) -> dict[str, int]:
    return {
        "cases": len(outcomes),
        "clean errors": sum(o.exit_code == 2 and o.clean for o in outcomes),
        "accepted": sum(o.exit_code == 0 and o.clean for o in outcomes),
        "tracebacks": sum(o.traceback for o in outcomes),
        "unclean": sum(not o.clean for o in outcomes),
        "files lost or changed": sum(len(o.lost) for o in outcomes),
        "commands": len({o.case.command for o in outcomes}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--markdown", type=Path, default=None)
    parser.add_argument("--commands", default=None, help="comma-separated commands (default: every one)")
    parser.add_argument("--verbose", action="store_true", help="a line per case as it ends")
    args = parser.parse_args()
    import typer

    from mechrecall_cli.app import app

    known = set(typer.main.get_command(app).commands)
    unknown = sorted(set(args.commands.split(",")) - known) if args.commands else []
    if unknown:
        parser.exit(2, f"error: --commands {unknown[0]!r} is not a mechrecall command: choose from {', '.join(sorted(known))}\n")
    import datasets

    datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory() as folder:
        commands = set(args.commands.split(",")) if args.commands else None
        outcomes = run_all(Path(folder), commands, args.verbose)
    counts = summary(outcomes)
    line = " | ".join(f"{key}: {value}" for key, value in counts.items())
    print(line)
    for outcome in outcomes:
        if not outcome.clean or outcome.lost:
            print("FAILED", " ".join(outcome.case.args), "exit", outcome.exit_code, "lost", outcome.lost)
    if args.markdown:
        args.markdown.write_text("| " + " | ".join(counts) + " |\n|" + "---|" * len(counts) + "\n| "
                                 + " | ".join(str(v) for v in counts.values()) + " |\n")


if __name__ == "__main__":
    main()
