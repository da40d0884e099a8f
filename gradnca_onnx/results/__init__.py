"""The ranking of a zoo and every way it is written: table, CSV, JSON (written and read), plots.

>>> from gradnca_onnx.engine import rank_zoo  # doctest: +SKIP
>>> ranking = rank_zoo(zoo_dir, target)        # doctest: +SKIP
>>> print(ranking.to_table())                  # doctest: +SKIP
"""

from .rank_json import RankScores, rank_scores, rankings_of, read_rank_document
from .ranking import ModelResult, Ranking, Rankings, ZooRanking
from .render import render_csv, render_csv_targets, render_json_targets, render_table
from .text import aligned, printable

__all__ = [
    "ModelResult",
    "RankScores",
    "Ranking",
    "Rankings",
    "ZooRanking",
    "aligned",
    "printable",
    "rank_scores",
    "rankings_of",
    "read_rank_document",
    "render_csv",
    "render_csv_targets",
    "render_json_targets",
    "render_table",
]
