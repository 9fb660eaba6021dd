"""The dimension legend, logical axis names, and the default sharding rules.

Shape letters used in names (`x_BxTxD`) and docstrings across the project:

  B batch          T codec frames        K RVQ levels       V vocabulary / codebook
  D model width    C chunk frames        S style dim        L sequence length
  H heads          Hd head dim           F MLP hidden       N layers

Logical axis names follow flaxformer/t5x so that t5x partitioning rules and
checkpoints read the same. Physical mesh axes are ("data", "fsdp", "tensor").
"""

# Logical axis names carried by every parameter.
VOCAB = "vocab"
EMBED = "embed"
JOINED_KV = "joined_kv"  # H * Hd, flattened head-major as in flaxformer
MLP = "mlp"
HEADS = "heads"
RELPOS = "relpos_buckets"
LORA_RANK = "lora_rank"
LATENT = "latent"  # codec latent width D (student heads)
# Activation axes.
BATCH = "batch"
LENGTH = "length"

MESH_AXES = ("data", "fsdp", "tensor")

# Logical -> mesh rules (first match wins, as in flax.linen.partitioning).
DEFAULT_RULES = (
    (BATCH, ("data", "fsdp")),
    (VOCAB, "tensor"),
    (EMBED, "fsdp"),
    (JOINED_KV, "tensor"),
    (MLP, "tensor"),
    (HEADS, "tensor"),
    (RELPOS, None),
    (LORA_RANK, None),
    (LATENT, None),
    (LENGTH, None),
)
