"""Audio codecs: the `Codec` interface and a minimal deterministic codec."""

from mrt_distill.codec.base import Codec
from mrt_distill.codec.base import dct_basis
from mrt_distill.codec.base import MinimalCodec
from mrt_distill.codec.base import rvq_dequantize
from mrt_distill.codec.base import rvq_quantize
from mrt_distill.codec.base import seeded_rng
from mrt_distill.codec.base import seeded_rvq_codebooks

__all__ = [
    "Codec",
    "MinimalCodec",
    "dct_basis",
    "rvq_dequantize",
    "rvq_quantize",
    "seeded_rng",
    "seeded_rvq_codebooks",
]
