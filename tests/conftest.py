"""Shared test settings."""

import torch

# One intra-op thread: on a small shared machine, torch's default thread pool spin-waits
# against other processes and turns millisecond matrix products into tens of milliseconds.
torch.set_num_threads(1)
