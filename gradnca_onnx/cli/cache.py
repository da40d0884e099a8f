"""``gradnca-onnx cache ls|clear``: what the feature cache holds, and emptying it."""

from __future__ import annotations

import time
from pathlib import Path

import click

from ..errors import InputError
from ..results.text import printable
from ._errors import user_errors

_CACHE_OPTION = click.option(
    "--cache", "cache_dir", type=click.Path(path_type=Path), default=None,
    help="Feature cache directory (default: $GRADNCA_CACHE or ~/.cache/gradnca-onnx).")


def _cache(cache_dir: Path | None):
    from ..engine import FeatureCache, default_cache_dir

    root = cache_dir or default_cache_dir()
    if root.exists() and not root.is_dir():
        raise InputError(f"--cache {root} is a file, not a cache directory; give the directory "
                         "rank uses (--cache or $GRADNCA_CACHE)")
    return FeatureCache(root)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"  # pragma: no cover


@click.group("cache")
def cache_group() -> None:
    """Inspect or empty the feature cache that `rank` keeps (keyed by model, data, settings,
    package, onnxruntime and execution-provider versions)."""


@cache_group.command("ls")
@_CACHE_OPTION
@user_errors
def cache_ls(cache_dir: Path | None) -> None:
    """One line per cache entry: key, model, target, versions, size, age.

    Each line goes through :func:`printable`: an entry's metadata is file content, and a
    control character in it must not act on the terminal.
    """
    cache = _cache(cache_dir)
    total = count = 0
    for e in cache.entries():
        m = e.meta
        listed = m.get("providers")
        providers = "+".join(str(p).replace("ExecutionProvider", "")  # meta is file content
                             for p in (listed if isinstance(listed, list) else [])) or "?"
        versions = (f"gradnca-onnx {m.get('package', '?')}, onnxruntime "
                    f"{m.get('onnxruntime', '?')}, {providers}")
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.modified))
        click.echo(printable(f"{e.key[:16]}  {m.get('model', '?')}  {m.get('target', '?')} "
                             f"({m.get('split', '?')})  {versions}  {_size(e.bytes)}  {when}"))
        total += e.bytes
        count += 1
    click.echo(f"{count} entries, {_size(total)} in {cache.root}", err=True)


@cache_group.command("clear")
@_CACHE_OPTION
@user_errors
def cache_clear(cache_dir: Path | None) -> None:
    """Delete every cache entry (only files the cache wrote; anything else is left alone)."""
    cache = _cache(cache_dir)
    n, size = cache.clear()
    click.echo(f"removed {n} entries ({_size(size)}) from {cache.root}", err=True)
