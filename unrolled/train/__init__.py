"""Training: schedules as data and one small loop with resumable run directories."""

from .schedule import LOSSES, SCHEDULES, Stage, end_to_end, make_schedule, stagewise
from .trainer import Trainer, TrainOptions, finish_run, load_weights, read_run_config, save_weights, write_run_config

__all__ = ["LOSSES", "SCHEDULES", "Stage", "TrainOptions", "Trainer", "end_to_end", "finish_run", "load_weights",
           "make_schedule", "read_run_config", "save_weights", "stagewise", "write_run_config"]
