"""gantool: train a GAN, export its generator, prove parity, benchmark honestly."""

__version__ = "0.1.0"
