"""Where a run executes: device context and data parallel, mixed precision, ModelArts / OBS copies, progress bars."""
