"""Dataclass configs for the world, the model and training, and the named presets.

Every config serialises to plain JSON (``asdict``) and is recorded in each manifest, so a run
says exactly how it was made. Presets are starting points: any field can be overridden.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mechrecall.errors import ConfigError

STRATEGIES = ("mixed", "two-stage")
# what a run can be trained with: the study's strategies, and BIO alone (a recipe for a base)
TRAINING_KINDS = STRATEGIES + ("bio",)
POPULATIONS = ("all", "a", "b")
# how populations "a" and "b" are kept apart (see WorldConfig.population_split)
POPULATION_SPLITS = ("last-name", "person")
BASE_RECIPES = ("random", "bio", "mixed")


@dataclass(frozen=True)
class WorldConfig:
    """The synthetic biography world (bioS-style)."""

    people: int = 10_000
    seed: int = 0
    bio_per_person: int = 1  # BIO texts per person, each with freshly drawn templates
    permute: bool = False  # shuffle sentence order in each BIO
    fullname: bool = False  # full name in every sentence instead of a pronoun
    qa_id_fraction: float = 0.5  # share of people whose QA is trained on (the rest is OOD)
    # "all", or one of two disjoint populations ("a": last names of even pool index, "b": odd),
    # so that a base pre-trained on "b" has never seen a person of an "a" world
    population: str = "all"
    # how "a" and "b" are kept apart. "last-name": each draws from its own half of the last-name pool,
    # so a base of "b" has never seen the last names of an "a" world (their embedding rows in θ_pre were
    # never trained). "person": both draw every name from every pool, and a full name belongs to "a" or
    # "b" by the parity of its three pool indices: disjoint people, every name token familiar to the
    # base, as a released checkpoint knows every token of a new person's name
    population_split: str = "last-name"

    def validate(self) -> None:
        if self.population not in POPULATIONS:
            raise ConfigError(f"unknown population {self.population!r}: choose one of {', '.join(POPULATIONS)}")
        if self.population_split not in POPULATION_SPLITS:
            raise ConfigError(f"unknown population-split {self.population_split!r}: choose one of {', '.join(POPULATION_SPLITS)}")
        if self.people < 2:
            raise ConfigError(f"people must be at least 2 (one QA-ID and one QA-OOD person), got {self.people}")
        if self.bio_per_person < 1:
            raise ConfigError(f"bio-per-person must be at least 1, got {self.bio_per_person}")
        if not 0.0 < self.qa_id_fraction < 1.0:
            raise ConfigError(f"qa-id-fraction must lie strictly between 0 and 1, got {self.qa_id_fraction}")


@dataclass(frozen=True)
class ModelSize:
    """Architecture of a model built (and trained from scratch) here."""

    n_layers: int
    d_model: int
    n_heads: int
    d_head: int
    d_mlp: int
    n_ctx: int = 256
    act_fn: str = "gelu"
    normalization_type: str = "LN"
    # a trained unembedding bias b_U. GPT-NeoX and Llama have none, so a model with one cannot be
    # exported to them exactly (`mechrecall export`); without one, b_U stays at zero, frozen, as
    # for the checkpoints converted here. The CPU sizes keep theirs: the measured presets (docs/sweep.md)
    # were trained with it, and flipping it changes their results.
    unembed_bias: bool = True


MODEL_SIZES: dict[str, ModelSize] = {
    # for tests and smoke runs only: seconds on a CPU
    "micro": ModelSize(n_layers=1, d_model=32, n_heads=2, d_head=16, d_mlp=64, unembed_bias=False),
    "tiny": ModelSize(n_layers=2, d_model=128, n_heads=4, d_head=32, d_mlp=512),
    # the same width with 16 heads in all, so that "the top 10% of heads" is more than one head
    "tiny-h16": ModelSize(n_layers=2, d_model=128, n_heads=8, d_head=16, d_mlp=512),
    "tiny-l4": ModelSize(n_layers=4, d_model=128, n_heads=4, d_head=32, d_mlp=512),
    "small": ModelSize(n_layers=4, d_model=256, n_heads=8, d_head=32, d_mlp=1024, unembed_bias=False),
    # GPU sweeps only: twice small's depth and width (128 heads), for the direction "more layers, more
    # parameters per person" that docs/sweep.md points to. Not measured yet: on the H100 lent on
    # 2026-11-22 no base of it finished inside a 10-minute command (docs/gpu-2026-11-22/README.md)
    "medium": ModelSize(n_layers=8, d_model=512, n_heads=16, d_head=32, d_mlp=2048, unembed_bias=False),
}


@dataclass(frozen=True)
class ModelConfig:
    """``name`` is a size built here (see MODEL_SIZES), a run directory (its fine-tuned weights
    become θ_pre: a base pre-trained here, e.g. on a disjoint population), or a checkpoint: a
    local directory or a Hugging Face model id already in the local cache."""

    name: str = "tiny"
    seed: int = 0  # initialisation seed of a model built here
    dtype: str = "float32"

    @property
    def is_built_here(self) -> bool:
        return self.name in MODEL_SIZES

    @property
    def source(self) -> str:
        """``built`` (a size), ``run`` (a run directory) or ``checkpoint``."""
        if self.is_built_here:
            return "built"
        if (Path(self.name) / "manifest.json").is_file():
            return "run"
        return "checkpoint"


@dataclass(frozen=True)
class TrainConfig:
    """Fine-tuning through the hooked model.

    ``mixed`` trains ``steps`` steps on batches holding a ``qa_share`` of QA-ID examples and BIO
    examples of every person otherwise. ``two-stage`` trains on BIO alone for ``bio_steps`` (or
    until the mean BIO loss of the last 50 steps is below ``bio_loss``, capped at ``bio_steps``),
    then on QA-ID alone for ``qa_steps``, each stage with a fresh AdamW and its own schedule; the
    QA stage may have its own learning rate and weight decay (``qa_lr``, ``qa_weight_decay``).
    ``bio`` (not a strategy of the study: a recipe for pre-training a base) trains ``steps`` steps
    on BIO alone. With ``eval_every``, exact match is measured every that many steps; it is always
    measured at the end of each stage.
    """

    strategy: str = "mixed"
    seed: int = 0
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    steps: int = 3000  # mixed
    qa_share: float = 0.5  # mixed
    bio_steps: int = 1500  # two-stage, stage 1 (upper bound when bio_loss is set)
    bio_loss: float | None = None  # two-stage, optional early stop of stage 1
    qa_steps: int = 1500  # two-stage, stage 2
    qa_lr: float | None = None  # two-stage, stage 2 learning rate (None: lr)
    qa_weight_decay: float | None = None  # two-stage, stage 2 weight decay (None: weight_decay)
    # what weight decay pulls the weights toward: "zero" (AdamW's) or "base", the weights training
    # started from (θ_pre; decoupled L2-SP): it penalizes ‖θ − θ_pre‖ rather than ‖θ‖
    decay_to: str = "zero"
    # ℓ1 pull toward θ_pre (Panigrahi et al.'s remedy for fine-tuning that localizes poorly): after
    # every step each trainable element's change from the starting weights is soft-thresholded by
    # lr·l1_to_base, so elements the loss does not push consistently stay exactly at θ_pre
    l1_to_base: float = 0.0
    eval_every: int | None = None  # exact match along training (None: at the end of each stage only)
    max_steps: int | None = None  # cap on the total, for smoke runs
    grad_clip: float = 1.0  # max global gradient norm
    checkpoint_every: int = 100
    eval_batch_size: int = 256

    def validate(self) -> None:
        if self.strategy not in TRAINING_KINDS:
            raise ConfigError(f"unknown strategy {self.strategy!r}: choose one of {', '.join(TRAINING_KINDS)}")
        if not 0.0 < self.qa_share < 1.0:
            raise ConfigError(f"qa-share must lie strictly between 0 and 1, got {self.qa_share}")
        for name in ("batch_size", "steps", "bio_steps", "qa_steps", "checkpoint_every", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.decay_to not in ("zero", "base"):
            raise ConfigError(f"decay-to must be zero or base, got {self.decay_to!r}")
        if not (math.isfinite(self.l1_to_base) and self.l1_to_base >= 0):
            raise ConfigError(f"l1-to-base must be a non-negative number, got {self.l1_to_base}")
        for name in ("max_steps", "eval_every"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be at least 1, got {value}")
        if self.qa_lr is not None and not (math.isfinite(self.qa_lr) and self.qa_lr > 0):
            raise ConfigError(f"qa-lr must be a positive number, got {self.qa_lr}")
        if self.qa_weight_decay is not None and not (math.isfinite(self.qa_weight_decay) and self.qa_weight_decay >= 0):
            raise ConfigError(f"qa-weight-decay must be a non-negative number, got {self.qa_weight_decay}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr must be a positive number, got {self.lr}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0) or self.warmup_steps < 0:
            raise ConfigError("weight-decay and warmup-steps must be non-negative numbers")
        if not (math.isfinite(self.grad_clip) and self.grad_clip > 0):
            raise ConfigError(f"grad-clip must be a positive number, got {self.grad_clip}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"min-lr-ratio must lie in [0, 1], got {self.min_lr_ratio}")

    @property
    def total_steps(self) -> int:
        planned = self.bio_steps + self.qa_steps if self.strategy == "two-stage" else self.steps
        return min(planned, self.max_steps) if self.max_steps is not None else planned


@dataclass(frozen=True)
class BaseConfig:
    """θ_pre of a study, shared by every seed and strategy, as one released checkpoint would be.

    ``random``: a fresh initialisation (the first version's θ_pre; a control, not a pre-trained
    model). ``bio`` / ``mixed``: a model of the study's size pre-trained here on its own world of
    population "b" (last names the studied population "a" never uses), on BIO texts alone or on
    BIO texts with the QA of half of its people (QA share ``qa_share``). Its world, initialisation
    and batch order come from ``seed``, never from the study's seeds.
    """

    recipe: str = "random"
    people: int = 1_000
    seed: int = 1_000
    bio_per_person: int = 3
    permute: bool = True
    fullname: bool = True
    steps: int = 6_000
    lr: float = 1e-3
    weight_decay: float = 0.1
    qa_share: float = 0.8
    batch_size: int = 64

    @property
    def pretrained(self) -> bool:
        return self.recipe != "random"

    def world(self, population_split: str = "last-name") -> WorldConfig:
        """The base's world: population "b", kept apart from the studied world's "a" as that world's
        ``population_split`` says."""
        return WorldConfig(
            people=self.people, seed=self.seed, bio_per_person=self.bio_per_person, permute=self.permute,
            fullname=self.fullname, population="b", population_split=population_split,
        )

    def train(self, template: TrainConfig) -> TrainConfig:
        """The base's training: the study's training settings with the base's own recipe."""
        return dataclasses.replace(
            template, strategy=self.recipe, seed=self.seed, steps=self.steps, lr=self.lr, weight_decay=self.weight_decay,
            qa_share=self.qa_share, batch_size=self.batch_size, qa_lr=None, qa_weight_decay=None, eval_every=None,
            max_steps=None, decay_to="zero", l1_to_base=0.0,
        )

    def validate(self) -> None:
        if self.recipe not in BASE_RECIPES:
            raise ConfigError(f"unknown base recipe {self.recipe!r}: choose one of {', '.join(BASE_RECIPES)}")
        self.world().validate()
        if self.pretrained:
            self.train(TrainConfig()).validate()


@dataclass(frozen=True)
class AnalysisConfig:
    """The settings ``mechrecall reproduce`` runs the analyses with (each analysis' own config
    takes them in its ``from_study``)."""

    trace: str = "training"  # the study's trace (during fine-tuning) or "posthoc"
    individuals: int | None = 20  # people traced (the study's 20); None: every training example
    shared_fraction: float = 0.01  # S_k with k = this share of all elements (ablation, heads, overlap)
    null_draws: int = 3  # per-tensor shuffles of the shared curve's null
    graft_target: float = 0.9  # the graft grows until it recovers this share of θ_task's QA accuracy (or outgrows 5%)
    graft_steps: int = 3000
    control_draws: int = 5  # random sets of the shared ablation, random removals from the graft
    heads_top: str = "10%"  # ablate-heads' headline share
    heads_curve: tuple[float, ...] = (5.0, 10.0, 20.0)  # percentages of all heads
    head_draws: int = 10  # random head sets per curve point
    attention_heads: int = 3  # top heads (by shared size) drawn in the attention case study
    attention_people: int = 100  # people averaged in the named-pattern scores
    patch_pairs: int = 32  # clean/corrupted pairs per format in activation patching

    def validate(self) -> None:
        if self.trace not in ("training", "posthoc"):
            raise ConfigError(f"trace must be training or posthoc, got {self.trace!r}")
        if self.individuals is not None and self.individuals < 1:
            raise ConfigError(f"individuals must be at least 1 (or null: every example), got {self.individuals}")
        if self.individuals is None and self.trace == "posthoc":
            raise ConfigError("a post-hoc trace follows chosen people: set individuals")
        if not 0.0 < self.shared_fraction < 1.0:
            raise ConfigError(f"shared fraction must lie in (0, 1), got {self.shared_fraction}")
        if not 0.0 < self.graft_target <= 1.0:
            raise ConfigError(f"graft target must lie in (0, 1], got {self.graft_target}")
        counts = ("graft_steps", "null_draws", "control_draws", "head_draws", "attention_heads", "attention_people", "patch_pairs")
        for name in counts:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name.replace('_', ' ')} must be at least 1, got {getattr(self, name)}")
        top = self.heads_top.strip()
        try:
            valid_top = 0 < float(top[:-1]) <= 100 if top.endswith("%") else int(top) > 0
        except ValueError:
            valid_top = False
        if not valid_top:
            raise ConfigError(f"heads top {self.heads_top!r} is neither a percentage in (0, 100] (10%) nor a positive count (12)")
        if not self.heads_curve or not all(0 < share <= 100 for share in self.heads_curve):
            raise ConfigError(f"heads curve shares must be percentages in (0, 100], got {list(self.heads_curve)}")


@dataclass(frozen=True)
class StudyConfig:
    """A preset: world, model, training and the analyses together."""

    name: str
    description: str
    world: WorldConfig = field(default_factory=WorldConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    base: BaseConfig = field(default_factory=BaseConfig)


PRESETS: dict[str, StudyConfig] = {
    # Chosen from the sweep of docs/sweep-2.md (tiny-h16, one CPU core per training). The base: pre-trained
    # with the mixed recipe (BIO + the QA of half of them, QA share 0.8) on 1,000 other people with 3
    # augmented BIOs each (varied text, as a released checkpoint has seen), 6,000 steps at lr 1e-3,
    # wd 1.0 (its own QA-OOD 41.3%).
    # The studied world: ONE BIO per person, pronouns after the first sentence, QA of 90% of people
    # trained. On the 3-BIO world of the earlier default, two-stage extracts more than mixed (gap
    # -37.6 ± 1.6 over seeds 0-2, docs/tiny-3bio/strategy_gap.md: Allen-Zhu & Li's augmented regime); on this
    # one mixed leads (trial single-id09-12k: +14.9 ± 2.6 over seeds 0-3, two-stage BIO 95.0 ± 0.4%,
    # at 12,000 mixed steps). Mixed 9,000 steps instead of 12,000 for the 45-minute first command:
    # in those 12k runs QA-OOD at step 9,000 was 31.2 / 25.8 / 32.8 / 29.0% (seeds 0-3, the
    # trajectories of docs/sweep-2.md), within a point of the end (30.5 / 24.8 / 32.2 / 29.7%).
    # Two-stage 2,000 BIO steps (BIO 100% at their end) + 1,500 QA steps at lr 1e-4, wd 0.01:
    # QA-ID is fitted by then and BIO is kept (95%); longer or gentler QA stages forgot or peaked
    # before QA-ID was fitted (single-id09-ts2k10k-lr3e5, single-id09-ts2k3k-lr3e5).
    # The earlier default: --set bio_per_person=3 --set permute=true --set fullname=true
    # --set qa_id_fraction=0.5 --set qa_share=0.8 --set steps=4500.
    "tiny": StudyConfig(
        name="tiny",
        description="CPU default: 1,000 people with one BIO each (pronouns after the first sentence, QA of 90% "
        "of them trained), a 2-layer model of 16 heads fine-tuned from a base pre-trained (mixed recipe) on "
        "1,000 other people with 3 augmented BIOs each",
        world=WorldConfig(people=1_000, bio_per_person=1, permute=False, fullname=False, qa_id_fraction=0.9),
        model=ModelConfig(name="tiny-h16"),
        train=TrainConfig(
            steps=9_000, bio_steps=2_000, qa_steps=1_500, qa_share=0.5, lr=1e-3, weight_decay=0.1, batch_size=64,
            qa_lr=1e-4, qa_weight_decay=0.01,
        ),
        base=BaseConfig(recipe="mixed", people=1_000, steps=6_000, lr=1e-3, weight_decay=1.0, qa_share=0.8, batch_size=64),
        # 16 heads: 6.25% is one head, the headline 10% two
        analysis=AnalysisConfig(heads_curve=(6.25, 12.5, 25.0), patch_pairs=32),
    ),
    "small": StudyConfig(
        name="small",
        description="single-GPU: the tiny recipe at a larger scale: 3,000 people with one BIO each (QA of 90% "
        "of them trained), a 4-layer d_model=256 model of 32 heads fine-tuned from a base pre-trained (mixed "
        "recipe) on 3,000 other people with 3 augmented BIOs each",
        # lengths keep tiny's passes over the data at batch 128 and 3x the people: 128 passes over the
        # BIOs in the BIO stage, mixed 13,500 steps (tiny's 9,000 x 64 examples per 1,000 people), a QA
        # stage of 1,500 steps (QA-ID is fitted long before its end, and every further QA step erodes BIO).
        # Not yet run: no GPU has been lent to this project's sessions.
        world=WorldConfig(people=3_000, bio_per_person=1, permute=False, fullname=False, qa_id_fraction=0.9),
        model=ModelConfig(name="small"),
        train=TrainConfig(
            steps=13_500, bio_steps=3_000, qa_steps=1_500, qa_share=0.5, lr=1e-3, weight_decay=0.1, batch_size=128,
            qa_lr=1e-4, qa_weight_decay=0.01,
        ),
        base=BaseConfig(recipe="mixed", people=3_000, steps=12_000, lr=1e-3, weight_decay=1.0, qa_share=0.8, batch_size=128),
        # 32 heads
        analysis=AnalysisConfig(heads_curve=(3.125, 6.25, 12.5, 25.0), patch_pairs=64),
    ),
    # the whole pipeline, base included, in about a minute on a CPU: for tests, demos and smoke runs
    # (its numbers mean nothing: 40 people, a 1-layer model of 2 heads, tens of steps)
    "micro": StudyConfig(
        name="micro",
        description="smoke test: 40 people, a 1-layer d_model=32 model (2 heads), a base pre-trained on 40 other "
        "people, tens of steps: every step of the study in about a minute",
        world=WorldConfig(people=40, bio_per_person=2, permute=True, fullname=True),
        model=ModelConfig(name="micro"),
        train=TrainConfig(
            steps=60, bio_steps=30, qa_steps=30, qa_share=0.5, batch_size=16, lr=3e-3, weight_decay=0.01, warmup_steps=5,
            checkpoint_every=20, eval_batch_size=128,
        ),
        base=BaseConfig(recipe="bio", people=40, steps=60, lr=3e-3, weight_decay=0.01, batch_size=16, bio_per_person=2),
        analysis=AnalysisConfig(
            individuals=4, graft_steps=3, control_draws=2, null_draws=2, heads_curve=(50.0, 100.0), head_draws=3,
            attention_heads=2, attention_people=4, patch_pairs=2, heads_top="50%",
        ),
    ),
    "paper": StudyConfig(
        name="paper",
        description="the study's setting: 10,000 people, Pythia-2.8B fine-tuned (weights from a local "
        "directory or the HF cache), for a large GPU",
        world=WorldConfig(people=10_000),
        model=ModelConfig(name="EleutherAI/pythia-2.8b", dtype="bfloat16"),
        train=TrainConfig(
            lr=1e-5,
            weight_decay=0.01,
            warmup_steps=200,
            batch_size=32,
            steps=12_000,
            bio_steps=6_000,
            qa_steps=6_000,
            eval_batch_size=64,
        ),
    ),
}


def get_preset(name: str) -> StudyConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}") from None


def with_overrides(obj: Any, **overrides: Any) -> Any:
    """``dataclasses.replace`` that ignores overrides left at ``None`` (options not given)."""
    given = {key: value for key, value in overrides.items() if value is not None}
    return dataclasses.replace(obj, **given)


def to_dict(obj: Any) -> dict[str, Any]:
    return asdict(obj)


# Settings added after studies had been cached, with the value that keeps the old behaviour: at that
# value they are left out of a step's key and a run's config, so adding one did not make every
# finished step stale; any other value is keyed.
KEY_NEUTRAL: dict[str, dict[str, Any]] = {"TrainConfig": {"l1_to_base": 0.0}, "WorldConfig": {"population_split": "last-name"}}

# The architecture of each built size when keys named a size alone. A size that still has it keeps
# its finished steps and runs; a size changed since (micro and small lost their trained b_U) is keyed
# by its whole architecture, so a run made with the old one is trained again, never reused.
SIZES_WHEN_KEYED_BY_NAME: dict[str, ModelSize] = {
    "micro": ModelSize(n_layers=1, d_model=32, n_heads=2, d_head=16, d_mlp=64, unembed_bias=True),
    "tiny": ModelSize(n_layers=2, d_model=128, n_heads=4, d_head=32, d_mlp=512, unembed_bias=True),
    "tiny-h16": ModelSize(n_layers=2, d_model=128, n_heads=8, d_head=16, d_mlp=512, unembed_bias=True),
    "tiny-l4": ModelSize(n_layers=4, d_model=128, n_heads=4, d_head=32, d_mlp=512, unembed_bias=True),
    "small": ModelSize(n_layers=4, d_model=256, n_heads=8, d_head=32, d_mlp=1024, unembed_bias=True),
}


def key_dict(obj: Any) -> dict[str, Any]:
    """A config as it is keyed (cache keys, run configs): its fields, less those at a neutral value
    (KEY_NEUTRAL); a model built here also names its architecture once that differs from what its
    size name meant when keys held the name alone."""
    data = asdict(obj)
    for name, value in KEY_NEUTRAL.get(type(obj).__name__, {}).items():
        if data.get(name) == value:
            data.pop(name)
    if isinstance(obj, ModelConfig) and obj.name in MODEL_SIZES and MODEL_SIZES[obj.name] != SIZES_WHEN_KEYED_BY_NAME.get(obj.name):
        data["architecture"] = asdict(MODEL_SIZES[obj.name])
    return data


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["steps=8000", "weight_decay=0.5"]`` → a dict (values parsed as JSON where they can be)."""
    import json

    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r} is not key=value (e.g. --set steps=8000)")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        overrides[key.strip().replace("-", "_")] = tuple(value) if isinstance(value, list) else value
    return overrides


def override_study(study: StudyConfig, overrides: dict[str, Any]) -> StudyConfig:
    """The preset with ``overrides`` routed to the world, model, training or analysis config that
    has the field (``base`` is the base's recipe and ``base_<field>`` a field of the base);
    ``seed`` is refused (seeds are the study's own: ``--seeds``, ``--seed``)."""
    parts = {"world": study.world, "model": study.model, "train": study.train, "analysis": study.analysis, "base": study.base}
    changes: dict[str, dict[str, Any]] = {part: {} for part in parts}
    base_fields = {f.name for f in dataclasses.fields(BaseConfig)}
    for key, value in overrides.items():
        if key == "base" or (key.startswith("base_") and key[5:] in base_fields):
            field_name = "recipe" if key == "base" else key[5:]
            changes["base"][field_name] = _check_type(study.base, key, field_name, value)
            continue
        homes = [part for part, config in parts.items() if part != "base" and key in {f.name for f in dataclasses.fields(config)}]
        if key in ("seed", "strategy") or not homes:
            raise ConfigError(f"--set {key}: not a setting of the study (world, model, training, analysis or base_*); seeds come from --seeds")
        for home in homes:
            changes[home][key] = _check_type(parts[home], key, key, value)
    updated = {part: dataclasses.replace(config, **changes[part]) for part, config in parts.items()}
    updated["world"].validate()
    updated["train"].validate()
    updated["analysis"].validate()
    updated["base"].validate()
    if updated["model"].name not in MODEL_SIZES and updated["base"].pretrained:
        raise ConfigError(f"a base pre-trained here needs a model built here ({', '.join(MODEL_SIZES)}), not {updated['model'].name!r}: set base=random")
    return dataclasses.replace(study, **updated)


def _check_type(config: Any, key: str, field_name: str, value: Any) -> Any:
    """``value`` converted to the setting's annotated type (an integer where a number is asked is
    fine; a string, a list or a flag where a number is asked is not), or one clear error."""
    import typing

    from mechrecall.results import decode

    kind = typing.get_type_hints(type(config))[field_name]
    try:
        return decode(kind, list(value) if isinstance(value, tuple) else value)
    except (TypeError, ValueError, KeyError):
        names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
        options = [a for a in typing.get_args(kind) if a is not type(None)] if typing.get_origin(kind) is not tuple else [kind]
        options = options or [kind]
        described = " or ".join(names.get(o, "a list like [1,2]" if typing.get_origin(o) is tuple else str(o)) for o in options)
        if type(None) in typing.get_args(kind):
            described += " or null"
        raise ConfigError(f"--set {key}={value!r}: {key} takes {described}") from None
