"""Experiment tracking and the model registry (MLflow): a local server, runs, versions."""
