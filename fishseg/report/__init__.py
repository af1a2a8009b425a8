"""The plot stage: figures of training, evaluation and the dataset; the offline page of dvc plots."""
