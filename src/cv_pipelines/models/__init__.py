"""Models: training, evaluation, the training matrix, packaging and the MLflow registry."""
