"""lth_tutorial: the Lottery Ticket Hypothesis (Frankle & Carbin, ICLR 2019), reproducible and interactive.

Data flows one way: presets -> lottery -> training -> models / masks / data. The run store, plots and
widgets sit beside; nothing imports the CLI or the widgets.
"""
from .data import DataConfig, DataError, DeviceLoader, load_split, load_splits
from .models import KINDS, count_weights, create_model, weight_kinds

__version__ = "0.1.0"
