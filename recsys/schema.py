"""Column and dataset names shared by the jobs: the contracts of DESIGN.md in one place."""

# Canonical columns of a cleaned interaction, before indexing (original ids are strings).
USER_ID = "user_id"
ITEM_ID = "item_id"
TS = "ts"
EVENT = "event"
VALUE = "value"

# Prepared training data.
USER_IDX = "user_idx"
ITEM_IDX = "item_idx"
WEIGHT = "weight"
# train/valid: a row's place from its user's newest kept row (0 = newest; 0 everywhere without time)
RECENCY = "recency"
N_EVENTS = "n_events"  # raw events merged into one (user, item) row; keeps the row accounting exact

# Quarantine.
REASON = "reason"
RAW = "raw"
CORRUPT = "_corrupt_record"

# Reject reasons, in the order the validator checks them (a row gets the first that applies).
MALFORMED_LINE = "malformed_line"
MISSING_USER = "missing_user"
MISSING_ITEM = "missing_item"
BAD_TIMESTAMP = "bad_timestamp"
FUTURE_TIMESTAMP = "future_timestamp"
UNKNOWN_EVENT = "unknown_event"
MISSING_VALUE = "missing_value"  # prepare.weight.method value or rating, and no value
BAD_VALUE = "bad_value"
VALUE_OUT_OF_RANGE = "value_out_of_range"
# Not a reject: the rows of a user on the deletion list (privacy.erase), counted and dropped.
ERASED = "erased"
REJECT_REASONS = (
    MALFORMED_LINE, MISSING_USER, MISSING_ITEM, BAD_TIMESTAMP, FUTURE_TIMESTAMP,
    UNKNOWN_EVENT, MISSING_VALUE, BAD_VALUE, VALUE_OUT_OF_RANGE,
)

# Datasets under <root>/data/<dataset>/ds=<ds>/.
TRAIN = "train"
VALID = "valid"
USERS = "users"
ITEMS = "items"
USER_INDEX = "user_index"
ITEM_INDEX = "item_index"
REJECTS = "rejects"
HISTORIES = "histories"
# Pairs a user has seen that are not positives (a rating below prepare.weight.threshold):
# never trained on, excluded from the user's recommendations. Empty for other weightings.
SEEN = "seen"
# The user-item graph of train + valid, one row per edge with its normalisations (lightgcn).
GRAPH = "graph"
PREPARED_DATASETS = (TRAIN, VALID, USERS, ITEMS, USER_INDEX, ITEM_INDEX, REJECTS, HISTORIES, SEEN, GRAPH)

# Columns of `histories` (one row per user, lists of the snapshot's history_len, left-padded).
HISTORY_LENGTH = "length"  # real entries
HISTORY_DROPPED = "dropped"  # older rows that did not fit
HISTORY_ITEMS = "items"  # item_idx, PAD -1
HISTORY_TS = "ts"  # epoch seconds, 0 for padding
HISTORY_WEIGHTS = "weights"  # implicit confidence, 0 for padding
HISTORY_VALID = "valid"  # 1 where the row is in the validation split

# Columns of `graph` (besides user_idx, item_idx).
GRAPH_VALID = "valid"  # 1 for a validation edge (left out of the fit)
GRAPH_NORM_TRAIN = "norm_train"  # 1/sqrt(deg_u deg_i) over training edges; null on validation edges
GRAPH_NORM_ALL = "norm_all"  # the same over every edge (the refit)

# Marker written last into a published snapshot; readers refuse a snapshot without it.
COMPLETE_MARKER = "_COMPLETE.json"
# Describes the feature columns of `users` / `items` (written beside their Parquet files).
FEATURES_META = "_features.json"
