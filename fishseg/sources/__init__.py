"""The download stage: bring the dataset from any source into data/raw, in the archive's layout."""
