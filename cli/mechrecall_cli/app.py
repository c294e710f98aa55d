"""``mechrecall``: typer commands that parse options and call the library.

Any :class:`mechrecall.MechrecallError` becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

app = typer.Typer(
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
    preset: str = typer.Option("tiny", help="preset whose world settings are the defaults"),
    people: int | None = typer.Option(None, help="number of people [preset: tiny 1,000; paper 10,000]"),
    seed: int | None = typer.Option(None, help="world seed"),
    bio_per_person: int | None = typer.Option(None, "--bio-per-person", help="BIO texts per person (fresh templates each)"),
    permute: bool | None = typer.Option(None, "--permute/--no-permute", help="shuffle sentence order in each BIO"),
    fullname: bool | None = typer.Option(None, "--fullname/--pronoun", help="full name in every sentence"),
    qa_id_fraction: float | None = typer.Option(None, "--qa-id-fraction", help="share of people whose QA is trained on"),
    population: str | None = typer.Option(None, help="all | a | b: two disjoint name populations (a base pre-trained on b never saw a person of a)"),
    overwrite: bool = typer.Option(False, help="replace an existing --out"),
) -> None:
    """Sample a synthetic biography world and save it (DatasetDict + tokenizer)."""
    import mechrecall as mr
    from mechrecall.config import with_overrides

    _quiet_libraries()
    config = with_overrides(
        mr.get_preset(preset).world, people=people, seed=seed, bio_per_person=bio_per_person, permute=permute,
        fullname=fullname, qa_id_fraction=qa_id_fraction, population=population,
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
    strategy: str = typer.Option("mixed", help="mixed | two-stage"),
    preset: str = typer.Option("tiny", help="tiny | small | paper: model and training defaults"),
    model: str | None = typer.Option(None, help="a size built here (micro, tiny, small), a run directory (its tuned weights as θ_pre), or a checkpoint dir / cached hub id"),
    model_seed: int | None = typer.Option(None, "--model-seed", help="initialisation seed of a model built here"),
    dtype: str | None = typer.Option(None, help="float32 | bfloat16 | float16"),
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
    trace_individuals: int | None = typer.Option(None, "--trace-individuals", help="accumulate the gradient trace of N QA-ID people at every step"),
    trace_measure: str = typer.Option("grad", "--trace-measure", help="grad | grad-delta | grad-theta"),
    overwrite: bool = typer.Option(False, help="replace an existing --out"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Fine-tune a model on a world with the mixed or two-stage strategy, then evaluate it."""
    import mechrecall as mr
    from mechrecall.config import with_overrides

    _quiet_libraries()
    study = mr.get_preset(preset)
    model_config = with_overrides(study.model, name=model, seed=model_seed, dtype=dtype)
    train_config = with_overrides(
        study.train, strategy=strategy, steps=steps, qa_share=qa_share, bio_steps=bio_steps, bio_loss=bio_loss,
        qa_steps=qa_steps, batch_size=batch_size, lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps,
        seed=seed, max_steps=max_steps, checkpoint_every=checkpoint_every,
    )
    train_config.validate()
    trace = None
    if trace_individuals is not None:
        from mechrecall.trace import TraceConfig

        trace = TraceConfig(individuals=trace_individuals, split="qa_id", measure=trace_measure)
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
    which: str = typer.Option("tuned", help="tuned (θ_task) | base (θ_pre)"),
    batch_size: int | None = typer.Option(None, "--batch-size"),
    device: str | None = typer.Option(None),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
) -> None:
    """Greedy exact-match accuracy: BIO completion, QA-ID and QA-OOD, overall and per attribute."""
    import mechrecall as mr

    _quiet_libraries()
    results = {str(run): mr.evaluate_run(run, which=which, batch_size=batch_size, device=device) for run in runs}
    if as_json:
        sys.stdout.write(json.dumps(results, indent=2) + "\n")
    else:
        print_metrics(results)


@app.command()
@reports_errors
def trace(
    run: Path = typer.Argument(..., help="a trained run directory"),
    individuals: int = typer.Option(20, help="how many people to trace (a seeded choice)"),
    split: str = typer.Option("qa_id", help="whose people: qa_id (QA trained on) or qa_ood"),
    measure: str = typer.Option("grad", help="grad: |g| | grad-delta: |g ⊙ (θ_task − θ_pre)| | grad-theta: |g ⊙ θ|"),
    seed: int = typer.Option(0, help="seed of the choice of people"),
    device: str | None = typer.Option(None),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Post-hoc cross-task gradient trace: BIO and QA influence of every parameter element."""
    from mechrecall.trace import TraceConfig
    from mechrecall.tracing import trace_run

    _quiet_libraries()
    path = trace_run(run, TraceConfig(individuals=individuals, split=split, measure=measure, seed=seed), device=device, progress=progress)
    console.print(f"trace written to {path}")


@app.command()
@reports_errors
def shared(
    runs: list[Path] = typer.Argument(..., help="one or more traced runs (e.g. mixed and two-stage)"),
    source: str = typer.Option("posthoc", "--trace", help="posthoc (trace.safetensors) | training (trace_training.safetensors)"),
    k: int | None = typer.Option(None, "--k", help="export the shared mask S_k of this size"),
    fraction: float | None = typer.Option(None, "--fraction", help="export S_k with k = this fraction of all elements"),
    by: str | None = typer.Option(None, "--by", help="head: shared counts per (layer, head, component) of S_k (default k: 1%)"),
    figure: Path | None = typer.Option(None, "--figure", help="where to write the curve figure (default: first run's figures/)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of tables"),
) -> None:
    """Shared parameters: |S_k| and |S_k|/k over a log grid of k, against the random overlap k/N."""
    from mechrecall.errors import ConfigError
    from mechrecall.figures import head_heatmaps, shared_curve_figure, write_figure
    from mechrecall.tracing import curve_of, shared_run

    if by not in (None, "head"):
        raise ConfigError(f"unknown --by {by!r}: the only grouping is head")
    if by == "head" and k is None and fraction is None:
        fraction = 0.01
    results = {str(run): shared_run(run, mode=source, k=k, fraction=fraction) for run in runs}
    curves = {label: curve_of(result) for label, result in results.items()}
    figure_path = write_figure(shared_curve_figure(curves), figure or Path(runs[0]) / "figures" / "shared_curve.html")
    if by == "head":
        for label, result in results.items():
            write_figure(
                head_heatmaps(result["mask"]["by_head"], result["mask"]["head_total"], f"{label}: shared elements of S_k, k={result['mask']['k']:,}"),
                Path(label) / "figures" / "shared_heads.html",
            )
    if as_json:
        sys.stdout.write(json.dumps(results, indent=2) + "\n")
        return
    print_shared(results, by_head=by == "head")
    console.print(f"figure: {figure_path}")


def print_shared(results: dict[str, dict[str, Any]], by_head: bool) -> None:
    from mechrecall.trace import report_ks

    table = Table(title="|S_k| / k  (random overlap k/N in brackets)")
    table.add_column("k", justify="right")
    for label in results:
        table.add_column(label, justify="right")
    curves = {label: result["curve"] for label, result in results.items()}
    sizes = [dict(zip(curve["k"], curve["shared"])) for curve in curves.values()]
    if len(curves) == 2:
        table.add_column("|S_k| ratio (first / second)", justify="right")
    first = next(iter(curves.values()))
    for k in report_ks(first["n"]):
        cells = [
            f"{size[k] / k:.4f} ({k / curve['n']:.4f})" if k in size else "·" for size, curve in zip(sizes, curves.values())
        ]
        if len(curves) == 2:
            a, b = sizes[0].get(k), sizes[1].get(k)
            cells.append(f"{a / b:.2f}" if a is not None and b else "·")
        table.add_row(f"{k:,}", *cells)
    console.print(table)
    if by_head:
        for label, result in results.items():
            mask = result["mask"]
            heads = Table(title=f"{label}: shared elements per head, k={mask['k']:,} (|S_k| = {mask['size']:,})")
            for column in ("layer", "head", "q", "k", "v", "o", "total"):
                heads.add_column(column, justify="right")
            group = len(mask["by_head"]["q"][0]) // mask["kv_heads"]
            for layer, row in enumerate(mask["head_total"]):
                for head, total in enumerate(row):
                    kv = head // group
                    heads.add_row(
                        str(layer), str(head), str(mask["by_head"]["q"][layer][head]), str(mask["by_head"]["k"][layer][kv]),
                        str(mask["by_head"]["v"][layer][kv]), str(mask["by_head"]["o"][layer][head]), f"{total:g}",
                    )
            console.print(heads)


@app.command()
@reports_errors
def graft(
    run: Path = typer.Argument(..., help="a trained run directory"),
    sparsity: float = typer.Option(1e-3, help="α: the base mask's share of all parameters, in (0, 1)"),
    target: float | None = typer.Option(None, help="find the smallest α (1e-4 … 0.5) recovering this share of θ_task's QA-ID accuracy"),
    steps: int = typer.Option(60, help="mask updates"),
    lr: float = typer.Option(10.0, help="largest logit move per update"),
    batch_size: int = typer.Option(64, "--batch-size"),
    seed: int = typer.Option(0),
    device: str | None = typer.Option(None),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Grafting: a sparse mask γ with θ_pre + γ ⊙ (θ_task − θ_pre) recovering θ_task's QA accuracy."""
    from mechrecall.grafting import GraftConfig, graft_run

    _quiet_libraries()
    config = GraftConfig(sparsity=sparsity, steps=steps, lr=lr, batch_size=batch_size, seed=seed)
    summary = graft_run(run, config, target=target, device=device, progress=progress)
    if as_json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
        return
    table = Table(title=f"graft of {run}: α={summary['sparsity']:g}, |γ|₀={summary['size']:,} ({100 * summary['fraction']:.3f}% of parameters)")
    for column in ("model", "BIO", "QA-ID", "QA-OOD"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name, values in summary["accuracy"].items():
        table.add_row(name, *(f"{100 * values[m]:.1f}" for m in ("bio", "qa_id", "qa_ood")))
    console.print(table)
    if summary["target_met"] is False:
        console.print(f"no α up to {summary['sparsity']:g} recovered {100 * target:.0f}% of θ_task's QA-ID accuracy; the largest was kept")
    if "shared_overlap" in summary:
        overlap = summary["shared_overlap"]
        console.print(f"|S ∩ γ|₀ / |γ|₀ = {overlap['intersection']:,} / {summary['size']:,} = {100 * overlap['share_of_graft']:.1f}% (|S| = {overlap['shared_size']:,})")


@app.command()
@reports_errors
def ablate(
    run: Path = typer.Argument(..., help="a trained, traced run directory"),
    what: str = typer.Option(..., help="shared | random | graft-minus-shared"),
    k: int | None = typer.Option(None, "--k", help="the shared set S_k's size"),
    fraction: float | None = typer.Option(None, help="S_k with k = this fraction of all elements"),
    like: str = typer.Option("shared", help="random control: shared (same count per tensor) | global"),
    seeds: int = typer.Option(3, help="random controls to average"),
    device: str | None = typer.Option(None),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Reset a set of parameter elements to θ_pre and evaluate the drop in BIO, QA-ID, QA-OOD."""
    from mechrecall.ablation import ablate_run

    _quiet_libraries()
    result = ablate_run(run, what, k=k, fraction=fraction, like=like, seeds=seeds, device=device)
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
        return
    table = Table(title=f"ablation of {what} in {run}")
    for column in ("metric", "before", "after", "drop", "relative drop"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    reference = result.get("graft", result["tuned"])
    for metric, values in result["ablated"].items():
        spread = f" ± {100 * result['spread'][metric]:.1f}" if "spread" in result else ""
        table.add_row(metric, f"{100 * reference[metric]:.1f}", f"{100 * values['accuracy']:.1f}{spread}", f"{100 * values['drop']:.1f}", f"{100 * values['relative_drop']:.1f}%")
    console.print(table)


@app.command()
@reports_errors
def report(
    runs: list[Path] = typer.Argument(..., help="runs to compare (e.g. mixed and two-stage)"),
    out: Path = typer.Option(Path("figures"), "--out", help="folder for report.md and report.html"),
) -> None:
    """Compare runs beside the study's numbers: a section per finding (markdown, HTML, figures).

    Several runs of one strategy are seeds: values become mean ± spread."""
    from mechrecall.report import group_runs, write_report

    _quiet_libraries()
    groups = group_runs(runs)
    markdown, page = write_report(groups, out)
    print_findings(groups)
    console.print(f"written: {markdown}, {page}")


def print_findings(groups: dict[str, Any]) -> None:
    from mechrecall.report import findings_table

    table = Table(title="findings beside the study (mean ± spread over seeds)")
    for column in ("finding", "measure", "study", *groups, "agrees"):
        table.add_column(column)
    for title, row in findings_table(groups):
        table.add_row(title, row.measure, row.study, *(row.ours.get(s, "·") for s in groups), row.agrees)
    console.print(table)


@app.command("ablate-heads")
@reports_errors
def ablate_heads(
    run: Path = typer.Argument(..., help="a trained run (with a shared mask and/or a graft for those rankings)"),
    top: str = typer.Option("10%", help="a percentage of all heads (10%) or a count (12)"),
    rank_by: str = typer.Option("shared", "--rank-by", help="shared | grafted | random"),
    method: str = typer.Option("reset", help="reset (weights back to θ_pre) | zero | mean (of hook_z over a reference batch)"),
    curve: str | None = typer.Option(None, help="percentages of heads, e.g. 1,2,5,10,20: accuracy for each ranking"),
    seed: int = typer.Option(0, help="seed of the random ranking"),
    device: str | None = typer.Option(None),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Ablate the top heads of a ranking; with --curve, accuracy against the share of heads ablated."""
    from mechrecall.errors import ConfigError
    from mechrecall.figures import write_figure
    from mechrecall.heads import ablate_heads_run, concentration_figure, curve_figure

    _quiet_libraries()
    shares = None
    if curve is not None:
        try:
            shares = [float(x) for x in curve.split(",") if x.strip()]
        except ValueError:
            raise ConfigError(f"--curve {curve!r} is not a list of percentages like 1,2,5,10,20") from None
    result = ablate_heads_run(run, top=top, rank_by=rank_by, method=method, curve=shares, seed=seed, device=device)
    write_figure(concentration_figure(result["rankings"], f"{run}: concentration over heads"), Path(run) / "figures" / "head_concentration.html")
    if "curve" in result:
        write_figure(curve_figure(result["curve"], result["before"], f"{run}: ablating top heads ({method})"), Path(run) / "figures" / "ablate_heads_curve.html")
    if as_json:
        sys.stdout.write(json.dumps({k: v for k, v in result.items() if k != "rankings"}, indent=2) + "\n")
        return
    table = Table(title=f"{run}: ablating the top {result['count']} heads by {rank_by} ({method})")
    for column in ("metric", "before", "after", "drop"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for metric in ("bio", "qa_id", "qa_ood"):
        table.add_row(metric, f"{100 * result['before'][metric]:.1f}", f"{100 * result['after'][metric]:.1f}", f"{100 * result['drop'][metric]:.1f}")
    console.print(table)
    console.print("heads: " + ", ".join(f"{l}.{h}" for l, h in result["heads"]))
    for ranking, info in result["rankings"].items():
        if info["concentration"]:
            c = info["concentration"]
            console.print(f"{ranking}: the top {c['top_heads']} heads ({100 * c['top_share']:.0f}%) hold {100 * c['held_by_top']:.1f}% of the elements")


@app.command()
@reports_errors
def attention(
    run: Path = typer.Argument(..., help="a trained run"),
    heads: str = typer.Option("top:5", help="top:N (by shared size), top:RANKING:N, or a list L.H,L.H"),
    example: int = typer.Option(0, help="the person whose BIO and QA patterns are drawn"),
    attribute: str = typer.Option("birth_city", help="the attribute asked"),
    people: int = typer.Option(100, help="people averaged for the named-pattern scores"),
    device: str | None = typer.Option(None),
) -> None:
    """Attention patterns of chosen heads on one person's BIO and QA, and named-pattern scores."""
    from mechrecall.attention import attention_run

    _quiet_libraries()
    result = attention_run(run, heads, person=example, attribute=attribute, people=people, device=device)
    table = Table(title="named patterns of the chosen heads (mean attention from the answer position)")
    for column in ("head", "BIO subject", "QA subject", "BIO relation", "QA relation"):
        table.add_column(column, justify="right")
    for head, values in result["head_scores"].items():
        table.add_row(head, *(f"{values[k]:.2f}" for k in ("bio_subject", "qa_subject", "bio_relation", "qa_relation")))
    console.print(table)
    for score, heads_list in result["shared_patterns"].items():
        console.print(f"{score} pattern on both BIO and QA (≥ 0.3): " + (", ".join(f"{l}.{h}" for l, h in heads_list) or "none"))
    console.print("figures: " + ", ".join(result["figures"]))


@app.command()
@reports_errors
def patch(
    run: Path = typer.Argument(..., help="a trained run"),
    pairs: int = typer.Option(64, help="clean/corrupted prompt pairs per format"),
    seed: int = typer.Option(0),
    device: str | None = typer.Option(None),
) -> None:
    """Activation patching of head outputs (clean person into a corrupted name), BIO and QA."""
    from mechrecall.patching import patching_run

    _quiet_libraries()
    result = patching_run(run, pairs=pairs, seed=seed, device=device)
    for kind, values in result["restored"].items():
        flat = [(v, l, h) for l, row in enumerate(values) for h, v in enumerate(row)]
        best = sorted(flat, reverse=True)[:5]
        console.print(f"{kind}: most restoring heads " + ", ".join(f"{l}.{h} ({v:.2f})" for v, l, h in best))
    console.print(f"figure: {result['figure']}")


@app.command()
@reports_errors
def reproduce(
    preset: str = typer.Option("tiny", help="tiny | small | paper (see `mechrecall presets`)"),
    seeds: int = typer.Option(1, help="repeat the training-dependent steps over seeds 0 … N−1; the report gives mean ± spread"),
    out: Path | None = typer.Option(None, "--out", help="study folder (default: runs/<preset>); a second run reuses every cached step"),
    set_: list[str] = typer.Option([], "--set", help="change a setting of the preset: key=value (world, model, training or analysis field), repeatable"),
    figures: Path | None = typer.Option(None, "--figures", help="also copy report.md, report.html and the figures here (e.g. figures/)"),
    device: str | None = typer.Option(None, help="cpu | cuda (default: cuda when available)"),
    jobs: int | None = typer.Option(None, help="trainings side by side, one process each (default: 2 on a multi-core CPU, 1 on a GPU)"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """The whole study for both strategies — data, training, evaluation, trace, shared sets, grafting,
    ablations with controls, head rankings and curves, attention, patching — and its report.

    Every step is cached by its inputs: a second run is a no-op, a changed option reruns only what
    depends on it, an interrupted run resumes."""
    from mechrecall.config import parse_overrides
    from mechrecall.report import group_runs
    from mechrecall.reproduce import ReproduceConfig, check_destination, export_report, reproduce as run_study, run_path

    _quiet_libraries()
    config = ReproduceConfig(preset=preset, seeds=seeds, overrides=parse_overrides(set_))
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
    print_findings(group_runs([run_path(folder, s, strategy) for s in range(seeds) for strategy in config.strategies]))
    console.print(f"report: {folder / 'report.md'}, {folder / 'report.html'}")
    if figures is not None:
        written = export_report(folder, figures)
        console.print(f"copied {len(written)} files to {figures}")


@app.command()
def presets() -> None:
    """List the named presets."""
    from mechrecall.config import PRESETS

    for name, study in PRESETS.items():
        console.print(f"[bold]{name}[/bold]: {study.description}")


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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
