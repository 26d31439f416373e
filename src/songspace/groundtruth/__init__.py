"""Ground truth: the train/val/test split, odd-one-out quartets and training triplets.

A quartet is three songs plus the one of them that is least like the other two (the "odd"
song), stored as (song1, song2, song3, odd). Two sources:

* labels: two songs of one label and one of another, the odd one, in shuffled order;
* annotations: human judgements in a CSV (the thesis layout: song 1, song 2, song 3, odd
  song), validated line by line.

Splits are decided per group (artist, album, or the track itself), so a group never straddles
two sides: by a hash of (seed, group), stable when songs are added; or, for annotations, by
their split column or by a partition that keeps the most quartets whole (partition.py).
Everything here is a pure function of DataFrames except the file I/O, which is all in `files`:
one reader and one writer for each ground-truth file.

* `files` - splits.csv, quartet and triplet CSVs, groundtruth.json;
* `splits`, `partition` - which side each track is on;
* `labels` - quartets and triplets drawn from labels;
* `annotations` - quartets read from a user's CSV of judgements;
* `agreement` - how often annotators who judged the same quartet picked the same odd song;
* `halves` - without labels: quartets of track halves (self-supervised training);
* `build` - everything together, `write` and `summary` for the stage.
"""
from songspace.groundtruth import halves, partition  # noqa: F401
from songspace.groundtruth.files import (  # noqa: F401
    SPLITS,
    SPLIT_COLUMNS,
    QUARTET_COLUMNS,
    TRIPLET_COLUMNS,
    STREAM_TEST,
    STREAM_VAL,
    STREAM_TRAIN,
    STREAM_PARTITION,
    SPLIT_METHODS,
    MAX_DRAW_ROUNDS,
    MAX_LISTED_ERRORS,
    GroundTruthError,
    write_splits,
    read_splits,
    write_quartets,
    read_quartets,
    write_triplets,
    read_triplets,
    write_report,
    read_report,
)
from songspace.groundtruth.splits import (  # noqa: F401
    split_tracks,
    split_position,
    assign_splits,
    track_groups,
    file_splits,
    partition_splits,
    label_split_counts,
    thin_labels,
)
from songspace.groundtruth.labels import (  # noqa: F401
    possible_draws,
    draw_pairs_with_odd,
    shuffle_quartets,
    derive_quartets,
    derive_triplets,
    quartet_triplets,
)
from songspace.groundtruth.annotations import (  # noqa: F401
    read_quartet_rows,
    track_lookup,
    Annotations,
    parse_quartets,
)
from songspace.groundtruth.agreement import annotator_agreement, agreement_line  # noqa: F401
from songspace.groundtruth.build import (  # noqa: F401
    split_quartets,
    GroundTruth,
    build,
    judgement_counts,
    top_up_validation,
    write,
    summary,
    judgement_lines,
)
