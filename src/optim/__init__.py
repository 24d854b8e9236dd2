"""Optimizers (SGD with momentum, RMSProp, AdamW, LARS), their parameter groups and the learning-rate schedules."""
