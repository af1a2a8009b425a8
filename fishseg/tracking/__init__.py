"""MLflow: the store runs go to, the training run and its record, the logged model, the model registry."""
