"""The download stage: bring the dataset from any source into work/raw, in the archive's layout."""
