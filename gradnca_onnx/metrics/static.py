"""Static baselines: properties of a zoo member that do not look at the target at all.

Public benchmarks of transferability metrics report that such baselines (model size, the size
of the source data) are hard to beat, so ``rank --metrics all`` reports them beside the
target-based metrics. Two exist:

* ``params``: the parameter count of the member's ``features.onnx``;
* ``source_images``: the size of the source dataset, as the member's manifest records it
  (schema 5, ``export``/``import --source-images N``). It is what the exporter's user stated,
  not something the package can verify; a manifest that does not record it gives no value
  (the metric is skipped with a note), never an estimate.

The metrics take numbers (:class:`MemberFacts`); reading them from the member's graph and
manifest is the engine's (:func:`gradnca_onnx.engine.member.read_member_facts`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from ..errors import InputError


@dataclass(frozen=True)
class MemberFacts:
    """What the static baselines know of one zoo member, as read from its files.

    Attributes
    ----------
    params : floating-point weights of ``features.onnx``, or ``None`` when not read
    source_images : the source dataset's size the manifest records, or ``None`` when it does
        not record it (or it was not read)
    problems : fact name -> why it could not be read (a missing or unreadable file); the
        metric of that fact is then an error with this message, never a number
    """

    params: int | None = None
    source_images: int | None = None
    problems: Mapping[str, str] = field(default_factory=dict)

    def fact(self, name: str) -> int | None:
        """The fact ``name`` (``params`` or ``source_images``); raises the reason it could
        not be read, as :class:`~gradnca_onnx.errors.InputError`."""
        if name in self.problems:
            raise InputError(self.problems[name])
        return getattr(self, name)


def params(member: MemberFacts) -> float | None:
    """The ``params`` baseline: the member's parameter count (higher is better), as a float;
    ``None`` when it was not read."""
    count = member.fact("params")
    return None if count is None else float(count)


def source_images(member: MemberFacts) -> float | None:
    """The ``source_images`` baseline: how many images the source model was pre-trained on
    (higher is better), as the exporter's user stated it.

    Returns ``None`` when the manifest does not record it (a manifest older than schema 5, or
    a member exported without ``--source-images``).
    """
    count = member.fact("source_images")
    return None if count is None else float(count)
