"""What ``export`` and ``import`` share: the features-only options and the one warning line."""

from __future__ import annotations

from typing import Any, Callable, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def features_only_options(verb: str, causes: str) -> Callable[[F], F]:
    """``--features-only-fallback`` and ``--features-only`` for ``verb`` (export/import)."""

    def decorate(func: F) -> F:
        func = click.option(
            "--features-only", "features_only", is_flag=True,
            help=f"{verb.capitalize()} features-only (no grads.onnx) without trying the "
                 "gradient graph.")(func)
        return click.option(
            "--features-only-fallback", "fallback", is_flag=True,
            help=f"When the gradient graph cannot be built ({causes}), {verb} the model "
                 "features-only: it gets S_LP and the baseline metrics but no S_FU or S.")(func)

    return decorate


def warn_if_features_only(manifest: Any, requested: bool) -> None:
    """The one line (on stderr, like every warning) that says what prevented S_FU."""
    if not manifest.has_grads and not requested:
        click.echo(f"Warning: S_FU not available for {manifest.name}: {manifest.features_only}; "
                   "it is ranked by S_LP and the baseline metrics only", err=True)
