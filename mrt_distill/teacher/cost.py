"""Analytic FLOPs of one teacher chunk (what the decode loop really runs).

XLA's cost analysis counts a while-loop body once, so decode cost is modelled
here from the architecture. A multiply-add is 2 FLOPs. R = rows (2 with CFG).
"""

from __future__ import annotations

from mrt_distill.teacher.config import TeacherConfig


def chunk_flops(cfg: TeacherConfig, rows: int = 2) -> dict:
  g = cfg.geometry
  d, hd = cfg.d_model, cfg.qkv_dim
  le, c, k = g.encoder_length, g.chunk_frames, g.target_levels
  v = cfg.vocab_rows
  enc_tok = 4 * d * hd + 3 * d * cfg.mlp_dim + 2 * le * hd
  encoder = 2 * rows * le * cfg.num_encoder_layers * enc_tok
  cross_kv = 2 * rows * le * cfg.num_temporal_layers * 2 * d * hd
  # Self-attn over a cache of C frames, cross-attn over Le encoder tokens.
  t_frame = 6 * d * hd + 3 * d * cfg.mlp_dim + 2 * c * hd + 2 * le * hd
  temporal = 2 * rows * c * cfg.num_temporal_layers * t_frame
  d_level = 4 * d * hd + 3 * d * cfg.depth_mlp_dim + 2 * k * hd
  depth = 2 * rows * c * k * cfg.num_depth_layers * d_level
  logits = 2 * rows * c * k * d * v
  total = encoder + cross_kv + temporal + depth + logits
  return {"encoder": encoder, "cross_kv": cross_kv, "temporal": temporal,
          "depth": depth, "logits": logits, "total": total}


def sequential_calls(cfg: TeacherConfig) -> dict:
  """Dependent network evaluations per chunk (v1: 800 decoder steps)."""
  g = cfg.geometry
  return {"decoder_steps": g.decoder_length,
          "temporal_stack_runs": g.chunk_frames,
          "depth_stack_runs": g.decoder_length,
          "encoder_runs": 1}
