"""Scoring embeddings on odd-one-out quartets: the distance x scaler grid, baselines, retrieval.

* `scores` - per-quartet scores, the bootstrap grid and its headline, the training check;
* `baselines` - hand-crafted and pretrained embeddings scored through the same grid;
* `labels` - label retrieval under one cell, and the labels wrong answers confuse;
* `report` - the whole evaluation, the one reader and writer of metrics/eval.json.

Everything public is re-exported here, so `evaluate.grid(...)` and `evaluate.run(...)` work.
"""
from songspace.evaluate.baselines import (N_MFCC, PRETRAINED_BASELINES, handcrafted_baselines,  # noqa: F401
                                          handcrafted_features, pretrained_baselines)
from songspace.evaluate.report import (EvalJsonError, best_cell, evaluate_and_plot, read_json,  # noqa: F401
                                       run, write_json)
from songspace.evaluate.labels import RETRIEVAL_K, confusion_counts, retrieval  # noqa: F401
from songspace.evaluate.scores import (CELLS, CHANCE, PAIRS, TIE_ATOL, TIE_RTOL, bootstrap_means,  # noqa: F401
                                       cell_scores, check_quartets, grid, headline, odd_one_out_accuracy,
                                       percentile_ci, quartet_pair_distances, random_quartets, tie_scores)
