"""MLflow: the store runs go to, the logged model, the model registry."""
