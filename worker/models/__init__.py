"""Model code: loading checkpoints and running them. Imports torch/transformers, never Celery or boto3."""
