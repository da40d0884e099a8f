"""The paper's Tables 2 and 3 (and the numbers printed beside them), transcribed literally from
``../shared/seed/paper.txt``, for the evaluation tests to compare with."""

from __future__ import annotations

# Columns: LogME, PARC, SFDA, NCTI, LEEP, NLEEP, Ours (model scenario: LogME, 1-PARC, SFDA,
# 1-NCTI, 1-LEEP, 1-NLEEP, 1-Ours). "-" is the paper's missing tau; (rank) as printed.
TARGETS = ("bloodmnist", "breastmnist", "dermamnist", "octmnist", "organamnist", "organcmnist",
           "organsmnist", "pathmnist", "pneumoniamnist", "retinamnist", "tissuemnist")
TABLE2 = {
    "bloodmnist": "0.11 (6) 0.30 (4) 0.30 (5) 0.07 (7) 0.48 (3) 0.75 (2) 0.78 (1)",
    "breastmnist": "0.22 (3) 0.20 (5) - (7) -0.15 (6) 0.26 (2) 0.21 (4) 0.44 (1)",
    "dermamnist": "0.52 (2) 0.34 (4) -0.27 (7) 0.19 (6) 0.23 (5) 0.44 (3) 0.70 (1)",
    "octmnist": "0.26 (5) 0.34 (3) 0.19 (7) 0.27 (4) 0.52 (1) 0.23 (6) 0.45 (2)",
    "organamnist": "0.26 (4) 0.27 (3) -0.00 (6) -0.26 (7) 0.18 (5) 0.32 (2) 0.57 (1)",
    "organcmnist": "0.47 (2) 0.50 (1) 0.43 (5) 0.46 (4) 0.40 (6) 0.47 (3) 0.11 (7)",
    "organsmnist": "0.12 (6) 0.17 (5) 0.66 (1) 0.31 (2) 0.24 (3) 0.10 (7) 0.22 (4)",
    "pathmnist": "0.51 (5) 0.54 (4) 0.38 (7) 0.40 (6) 0.56 (3) 0.57 (2) 0.62 (1)",
    "pneumoniamnist": "0.31 (3) 0.12 (5) - (7) -0.37 (6) 0.22 (4) 0.31 (2) 0.61 (1)",
    "retinamnist": "0.33 (6) 0.50 (3) 0.27 (7) 0.47 (4) 0.34 (5) 0.55 (2) 0.60 (1)",
    "tissuemnist": "0.58 (3) -0.01 (7) 0.46 (5) 0.62 (2) 0.42 (6) 0.58 (4) 0.65 (1)",
}
TABLE2_AVG_RANK = "4.00 4.00 5.82 4.91 3.91 3.45 1.91"
TABLE2_FRIEDMAN_P = "0.002"
PAPER_CD = 2.792  # "the critical difference (CD) for 11 datasets and seven methods is ... 2.792"

TABLE3 = {
    "bloodmnist": "-0.20 (7) -0.01 (6) 0.28 (4) 0.32 (3) 0.48 (1) 0.35 (2) -0.00 (5)",
    "breastmnist": "-0.23 (7) -0.18 (6) 0.40 (2) 0.69 (1) 0.22 (3) 0.17 (5) 0.22 (4)",
    "dermamnist": "-0.15 (7) 0.46 (1) 0.23 (4) -0.01 (6) 0.45 (2) 0.38 (3) 0.19 (5)",
    "octmnist": "0.26 (5) 0.51 (2) 0.16 (6) 0.38 (4) 0.44 (3) 0.66 (1) 0.11 (7)",
    "organamnist": "0.36 (5) 0.60 (2) 0.33 (6) -0.00 (7) 0.53 (3) 0.52 (4) 0.70 (1)",
    "organcmnist": "0.29 (1) 0.09 (5) 0.12 (3) 0.01 (7) 0.10 (4) 0.04 (6) 0.19 (2)",
    "organsmnist": "0.39 (2) 0.21 (4) 0.04 (5) -0.14 (7) 0.35 (3) -0.06 (6) 0.42 (1)",
    "pathmnist": "-0.50 (5) -0.75 (7) 0.09 (2) -0.39 (4) 0.14 (1) -0.51 (6) -0.30 (3)",
    "pneumoniamnist": "-0.08 (7) 0.28 (3) 0.16 (5) 0.29 (2) 0.25 (4) 0.12 (6) 0.32 (1)",
    "retinamnist": "0.29 (3) -0.18 (7) 0.40 (2) 0.09 (4) -0.09 (5) -0.12 (6) 0.70 (1)",
    "tissuemnist": "-0.03 (5) 0.21 (2) -0.15 (7) -0.15 (6) 0.19 (3) -0.01 (4) 0.32 (1)",
}
TABLE3_AVG_RANK = "4.91 4.09 3.91 4.64 2.91 4.73 2.82"


def parse_printed(row: str) -> tuple[list[str], list[int]]:
    """'0.11 (6) - (7) ...' -> (['0.11', '-'], [6, 7])."""
    toks = row.split()
    return toks[0::2], [int(t.strip("()")) for t in toks[1::2]]
