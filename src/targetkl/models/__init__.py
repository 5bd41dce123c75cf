"""Codec models: encoder, decoder, the autoencoder around a bottleneck, and discriminators."""
