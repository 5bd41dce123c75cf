"""Audio data: the synthesized demo corpus, the corpus index, splits, lazily read clips and crops."""

from targetkl.data.audio import AudioClip, AudioSet, load_audio, load_folder, random_crops, read_window
from targetkl.data.index import DataError, ensure_index

__all__ = ["AudioClip", "AudioSet", "DataError", "ensure_index", "load_audio", "load_folder", "random_crops",
           "read_window"]
