"""Audio data: the synthesized demo corpus, folder loading with captions, splits and random crops."""

from targetkl.data.audio import AudioClip, AudioSet, DataError, load_audio, load_folder, random_crops

__all__ = ["AudioClip", "AudioSet", "DataError", "load_audio", "load_folder", "random_crops"]
