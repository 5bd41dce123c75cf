"""Evaluation: measured rate on held-out audio and distortion metrics."""
