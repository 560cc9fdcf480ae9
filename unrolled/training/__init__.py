"""Training: schedules as data, one small loop, and the run directory it checkpoints into."""

from .rundir import FORMAT, RunDir, eval_csv_name, load_weights, save_weights
from .schedule import LOSSES, SCHEDULES, Stage, end_to_end, make_schedule, stagewise
from .trainer import Trainer, TrainOptions

__all__ = ["FORMAT", "LOSSES", "SCHEDULES", "RunDir", "Stage", "TrainOptions", "Trainer", "end_to_end",
           "eval_csv_name", "load_weights", "make_schedule", "save_weights", "stagewise"]
