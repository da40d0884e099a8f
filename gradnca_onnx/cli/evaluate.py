"""``gradnca-onnx evaluate`` and ``gradnca-onnx benchmark``: judge metrics against ground truth."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, Sequence, TypeVar

import click

from ..errors import InputError
from ._errors import Inputs, check_output_dir, user_errors

if TYPE_CHECKING:
    from ..evaluation.report import Evaluation
    from ..evaluation.table import SourceTargetTable

T = TypeVar("T")


# The evaluation package pulls in scipy.stats (~1 s); only the commands that use it pay for it.
def read_table(*args, **kwargs):  # noqa: ANN002, ANN003 - a thin lazy forwarder
    from ..evaluation.table import read_table as _read

    return _read(*args, **kwargs)


def evaluate(*args, **kwargs):  # noqa: ANN002, ANN003
    from ..evaluation.report import evaluate as _evaluate

    return _evaluate(*args, **kwargs)


class _LazyBenchmark:
    def __getattr__(self, name: str):
        from ..evaluation import benchmark

        return getattr(benchmark, name)


bench = _LazyBenchmark()

_BENCHMARKS = {"paper-dataset": "dataset", "paper-model": "model"}
#: The files ``--plot DIR`` receives (``evaluation.plots.plot_evaluation``): each is checked
#: before any work to be new or a regular file that is not an input.
_MODEL_NOTE = (
    "Model scenario: PARC, NCTI, LEEP and NLEEP are reported as 1 - score and GradNCA uses the "
    "inverted normalisation (paper Eq. 8). The paper prints average ranks 3.91 (SFDA) and 4.73 "
    "(NLEEP), which do not follow from its own per-target ranks; the row above is computed from "
    "the taus (see the README, Evaluation)."
)


def _common_options(func: Callable[..., T]) -> Callable[..., T]:
    options = [
        click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
                     show_default=True, help="Plain-text table like the paper's, or JSON."),
        click.option("--plot", "plot_dir", type=click.Path(file_okay=False), default=None,
                     help="Also write the scatter grid, critical-difference diagram and tau heat "
                          "map (PNG and PDF) into this directory."),
        click.option("--alpha", type=float, default=0.05, show_default=True,
                     help="Significance level of the Nemenyi critical difference."),
        click.option("--paper-cd", is_flag=True,
                     help="Use the paper's q lookup for the critical difference (q for k + 1 "
                          "methods, its off-by-one) instead of the correct q for k."),
        click.option("--bootstrap", "n_bootstrap", type=click.IntRange(min=0), default=0,
                     show_default=True,
                     help="Bootstrap resamples of the sources for tau confidence intervals "
                          "(JSON key tau_ci); 0 = none."),
        click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
                     help="Seed of the bootstrap (an integer >= 0)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _score_spec(spec: str) -> tuple[str, str]:
    """(name, path) of a ``--scores NAME=SCORES.csv`` value (a bare path is named after its
    file)."""
    name, sep, path = spec.partition("=")
    if not sep:
        name, path = Path(spec).stem, spec
    return name.strip(), path.strip()


def _parse_score_specs(specs: Sequence[str]) -> dict[str, SourceTargetTable]:
    tables: dict[str, SourceTargetTable] = {}
    for spec in specs:
        name, path = _score_spec(spec)
        if not name or not path:
            raise InputError(f"--scores expects NAME=SCORES.csv; got {spec!r}")
        if name in tables:
            raise InputError(f"--scores: method name {name!r} is given twice; give each a unique name")
        tables[name] = read_table(path, name=f"scores {name!r} ({path})")
    return tables


def _check_truth_targets(truth: SourceTargetTable, scores: Mapping[str, SourceTargetTable],
                         truth_path: str) -> str | None:
    """Refuse a method that misses a ground-truth target another method scores; return the
    warning for targets that no method scores (``None`` when every target is scored).

    A target none scores is legitimate (the paper's released AUCs_*.csv hold chestmnist,
    which no released metric scores) but left out of every tau, average rank and test, so the
    user must hear that the evaluation does not cover it.

    Raises
    ------
    ValueError
        Naming the scores file and the target(s) it lacks.
    """
    scored = [t for t in truth.targets if any(t in table.targets for table in scores.values())]
    for table in scores.values():
        lacks = [t for t in scored if t not in table.targets]
        if lacks:
            raise InputError(f"{table.name} has no score for target(s) {lacks} of --truth "
                             f"{truth_path}, which other methods score; score every target, "
                             "or drop those columns from the ground truth")
    missing = [t for t in truth.targets if t not in scored]
    if not (missing and scores):
        return None
    return (f"target(s) {missing} of --truth {truth_path} are scored by no --scores/--rank "
            f"method; they are left out and the evaluation covers the other {len(scored)} "
            "target(s)")


def _rank_scores(paths: Sequence[str], truth: SourceTargetTable,
                 taken: Mapping[str, SourceTargetTable]) -> dict[str, SourceTargetTable]:
    """Every score of the rank JSON files, methods that rank nothing dropped with a warning."""
    from ..evaluation.rank_output import drop_unrankable, scores_from_rank

    tables = scores_from_rank(paths)
    clash = sorted(set(tables) & set(taken))
    if clash:
        raise InputError(f"--scores name(s) {clash} are also scores of the --rank output; "
                         "rename yours")
    keep, dropped = drop_unrankable(truth, tables)
    for name, why in dropped.items():
        click.echo(f"Warning: {name} (from --rank) left out: {why}", err=True)
    return keep


def _replicate_tables(paths: Sequence[str]) -> dict[str, SourceTargetTable] | None:
    if not paths:
        return None
    if len(paths) < 2:
        raise InputError("--replicate needs at least two replicate ground truths (one per seed, "
                         "from `finetune summarize --replicates DIR`)")
    tables: dict[str, SourceTargetTable] = {}
    for path in paths:
        name = Path(path).stem.removeprefix("truth_")
        if name in tables:
            raise InputError(f"--replicate: two files are named {name!r}; give distinct files")
        tables[name] = read_table(path, name=f"replicate {name!r} ({path})")
    return tables


def _run(truth: SourceTargetTable, scores: Mapping[str, SourceTargetTable], *, scenario: str,
         fmt: str, plot_dir: str | None, alpha: float, paper_cd: bool, n_bootstrap: int,
         seed: int, note: str | None = None,
         replicates: Mapping[str, SourceTargetTable] | None = None,
         inputs: Inputs | None = None, warning: str | None = None) -> None:
    from ..evaluation.plots import PLOT_FILES

    check_output_dir(plot_dir, "--plot", inputs, files=PLOT_FILES)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result: Evaluation = evaluate(truth, scores, scenario=scenario, alpha=alpha,
                                      cd_lookup="paper" if paper_cd else "correct",
                                      n_bootstrap=n_bootstrap, seed=seed if n_bootstrap else None,
                                      replicates=replicates)
    if warning:  # given only once the evaluation stands: a refused input says one line
        click.echo(f"Warning: {warning}", err=True)
    for w in caught:
        # Only our data warnings (missing pairs, constant terms) concern the user's input.
        if issubclass(w.category, UserWarning):
            click.echo(f"Warning: {' '.join(str(w.message).split())}", err=True)
    if fmt == "json":
        click.echo(result.to_json())
    else:
        click.echo(result.format_table())
        if note:
            click.echo(note)
    if plot_dir is not None:
        from ..evaluation.plots import plot_evaluation

        paths = plot_evaluation(result, plot_dir)  # no matplotlib: one line naming the extra
        click.echo(f"Wrote {len(paths)} figure files to {plot_dir}", err=True)


@click.command("evaluate")
@click.option("--truth", "truth_path", default=None, metavar="AUCS.csv",
              help="Ground truth, sources x targets CSV (the released AUCs_*.csv layout works as is).")
@click.option("--benchmark", "benchmark_name", type=click.Choice(sorted(_BENCHMARKS)), default=None,
              help="Use the paper's released ground truth and rank your scores among its seven methods.")
@click.option("--scores", "score_specs", multiple=True, metavar="NAME=SCORES.csv",
              help="A metric's scores, sources x targets CSV, higher = better; repeat per metric.")
@click.option("--scenario", type=click.Choice(["dataset", "model"]), default=None,
              help="dataset (default) or model; implied by --benchmark.")
@click.option("--rank", "rank_paths", multiple=True, metavar="RANK.json",
              help="Every score of `rank --format json` output (one file per target, or one "
                   "several-target file): GradNCA, S_LP, S_FU and each --metrics baseline, "
                   "params included; methods that rank nothing are left out with a warning.")
@click.option("--replicate", "replicate_paths", multiple=True, metavar="TRUTH_SEED.csv",
              help="A seed replicate of the ground truth (`finetune summarize --replicates`); "
                   "give two or more: per target, the tau between them is reported beside "
                   "each metric's.")
@_common_options
@user_errors
def evaluate_command(truth_path: str | None, benchmark_name: str | None, score_specs: tuple[str, ...],
                     scenario: str | None, rank_paths: tuple[str, ...],
                     replicate_paths: tuple[str, ...], fmt: str, plot_dir: str | None,
                     alpha: float, paper_cd: bool, n_bootstrap: int, seed: int) -> None:
    """Weighted Kendall tau of each metric per target, ranks, Friedman test and Nemenyi CD.

    Each target's own source row (a source named like the target) is left out of its ranking.
    """
    if (truth_path is None) == (benchmark_name is None):
        raise InputError("give exactly one of --truth AUCS.csv or --benchmark paper-dataset|paper-model")
    user_scores = _parse_score_specs(score_specs)
    if benchmark_name is not None:
        implied = _BENCHMARKS[benchmark_name]
        if scenario is not None and scenario != implied:
            raise InputError(f"--benchmark {benchmark_name} is the {implied} scenario; drop "
                             f"--scenario {scenario} or choose the other benchmark")
        scenario = implied
        truth, scores = bench.paper_benchmark(implied)
        clash = sorted(set(user_scores) & set(scores))
        if clash:
            raise InputError(f"--scores name(s) {clash} are taken by the benchmark's methods; "
                             "rename yours (e.g. mine=SCORES.csv)")
        scores = {**scores, **user_scores}
    else:
        if not user_scores and not rank_paths:
            raise InputError("give at least one --scores NAME=SCORES.csv (or --rank RANK.json) "
                             "to evaluate against --truth")
        truth = read_table(truth_path, name=f"truth ({truth_path})")  # type: ignore[arg-type]
        scores = user_scores
    if rank_paths:
        if benchmark_name is not None:
            raise InputError("--rank scores your own zoo; use it with --truth, not --benchmark")
        scores = {**scores, **_rank_scores(rank_paths, truth, scores)}
    unscored = _check_truth_targets(truth, scores, truth_path) if truth_path else None
    replicates = _replicate_tables(replicate_paths)
    if replicates is not None and benchmark_name is not None:
        raise InputError("--replicate goes with your own --truth, not --benchmark")
    inputs = {"--truth": truth_path, "--scores": [_score_spec(s)[1] for s in score_specs],
              "--rank": rank_paths, "--replicate": replicate_paths}
    _run(truth, scores, scenario=scenario or "dataset", fmt=fmt, plot_dir=plot_dir, alpha=alpha,
         paper_cd=paper_cd, n_bootstrap=n_bootstrap, seed=seed, replicates=replicates,
         inputs=inputs, warning=unscored)


@click.command("benchmark")
@click.argument("name", type=click.Choice(["paper"]))
@click.option("--scenario", type=click.Choice(["dataset", "model"]), default="dataset",
              show_default=True,
              help="dataset: the paper's Table 2 (15 sources, ResNet18); model: its Table 3 "
                   "(9 ImageNet architectures).")
@_common_options
@user_errors
def benchmark_command(name: str, scenario: str, fmt: str, plot_dir: str | None, alpha: float,
                      paper_cd: bool, n_bootstrap: int, seed: int) -> None:
    """Evaluate the seven methods of the paper on its released MedMNIST transfer results."""
    truth, scores = bench.paper_benchmark(scenario)  # type: ignore[arg-type]
    _run(truth, scores, scenario=scenario, fmt=fmt, plot_dir=plot_dir, alpha=alpha,
         paper_cd=paper_cd, n_bootstrap=n_bootstrap, seed=seed,
         note=_MODEL_NOTE if scenario == "model" else None)
