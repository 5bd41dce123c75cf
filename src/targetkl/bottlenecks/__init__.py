"""Bottlenecks behind one contract: each returns a ``BottleneckOutput`` with its rate in bits per frame."""

from targetkl.bottlenecks.base import Bottleneck, BottleneckOutput
from targetkl.bottlenecks.factory import build_bottleneck
from targetkl.bottlenecks.gaussian import GaussianBottleneck, gaussian_kl
from targetkl.bottlenecks.identity import IdentityBottleneck
from targetkl.bottlenecks.rvq import RVQBottleneck

__all__ = ["Bottleneck", "BottleneckOutput", "GaussianBottleneck", "IdentityBottleneck", "RVQBottleneck",
           "build_bottleneck", "gaussian_kl"]
