"""The exceptions that mean "bad input": the CLI prints their one-line message instead of a traceback."""

from targetkl.bitstream import BitstreamError
from targetkl.config import ConfigError
from targetkl.data.audio import DataError
from targetkl.eval.classic import CodecToolError
from targetkl.eval.sweep import SweepError
from targetkl.gen.dataset import LatentSetError
from targetkl.gen.text import TextEncoderError
from targetkl.latents import LatentFileError
from targetkl.train.checkpoint import CheckpointError
from targetkl.train.runlock import RunFolderError
from targetkl.train.trainer import TrainingError

USER_ERRORS = (ConfigError, DataError, CheckpointError, TrainingError, LatentFileError, BitstreamError,
               CodecToolError, SweepError, LatentSetError, TextEncoderError, RunFolderError, FileNotFoundError)
