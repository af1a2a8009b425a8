"""The split and stats stages: index and validate pairs, group near-duplicates, split, prepare arrays, statistics."""
