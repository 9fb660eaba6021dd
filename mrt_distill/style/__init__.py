"""Style models (MusicCoCa's role) and prompt mixing."""

from mrt_distill.style.base import MinimalStyleModel
from mrt_distill.style.base import StyleModel
from mrt_distill.style.mixing import clear_prompt_cache
from mrt_distill.style.mixing import embed_prompt_mix
from mrt_distill.style.mixing import mix_embeddings
from mrt_distill.style.mixing import parse_prompt_mix
from mrt_distill.style.mixing import style_tokens

__all__ = [
    "MinimalStyleModel",
    "StyleModel",
    "clear_prompt_cache",
    "embed_prompt_mix",
    "mix_embeddings",
    "parse_prompt_mix",
    "style_tokens",
]
