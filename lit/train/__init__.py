"""The LiT training engine: loop, optimizer and schedule, checkpoints, distributed setup, signals."""
