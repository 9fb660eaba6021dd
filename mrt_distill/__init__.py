"""mrt_distill: data-free streaming consistency distillation of Magenta RealTime."""

__version__ = "0.1.0"
