"""Training machinery shared by every task: the train-one-step cell (loss scale, overflow skip, clipping), EMA,
the epoch loop and its callbacks (log lines, metrics, checkpoints, evaluation), the criterion and checkpoint files."""
