"""Building blocks: weight-normed convolutions, the Snake activation and dilated residual units."""

from targetkl.nn.layers import ResidualUnit, Snake, wn_conv1d, wn_conv_transpose1d

__all__ = ["ResidualUnit", "Snake", "wn_conv1d", "wn_conv_transpose1d"]
