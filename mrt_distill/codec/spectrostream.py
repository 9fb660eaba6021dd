"""SpectroStream, Magenta RT v1's codec, loaded from its TF SavedModels.

Shape letters: B batch, S audio samples, C channels, T codec frames,
K RVQ levels, V codebook size, D latent width.

Reference: reference/magenta_rt_v1.md §5.1, §6.1. Magenta RT ships the codec
as three TF SavedModels in one folder (Hugging Face `google/magenta-realtime`
or `gs://magenta-rt-public`, path `savedmodels/ssv2_48k_stereo/`):

  encoder/     __call__: float32 (B, S, 2) at 48 kHz -> (B, ceil(S/1920), 256)
  decoder/     __call__: float32 (B, T, 256) -> (B, T * 1920, 2)
  quantizer/   inference_encoding_with_tf_function(embeddings,
               num_quantizers=64) -> tokens (K, B, T); codebooks in
               `_quantizers[i].embeddings`, each (256, 1024)

As in Magenta RT's `SpectroStreamJAX`, the encoder and decoder are converted
to JAX with `tf2jax.convert` (traced on zeros of (1, 48000, 2) and
(1, 50, 256), shape checks off so other lengths retrace), so `decode_latents`
is a jax function that distillation losses differentiate through and that
jits into the train step. Tokenisation is greedy L2 RVQ in numpy over the
codebooks read from the quantiser (`Codec.quantize`); at load it is checked
against the SavedModel's own `inference_encoding_with_tf_function` on probe
latents, and if the two ever disagree the codec tokenises with the SavedModel
instead (`tokenizer="auto"`).

TensorFlow and tf2jax are needed only to load (the `[interop]` extra);
importing this module does not import them.
"""

from __future__ import annotations

import logging
import os
import pathlib
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from mrt_distill.checksummed import MissingAssetError
from mrt_distill.codec.base import Codec
from mrt_distill.codec.base import rvq_quantize
from mrt_distill.geometry import MRT_V1
from mrt_distill.geometry import Geometry
# The [interop] extra's import helpers; importing them does not import TF.
from mrt_distill.interop import import_optional, import_tensorflow

log = logging.getLogger(__name__)

HF_REPO = "google/magenta-realtime"
GCS_BUCKET = "gs://magenta-rt-public"
RECIPE = "docs/real_magenta_rt.md"
# Written by `tools/make_fake_magenta_rt_assets.py` at the root of its tree,
# so a run on fake assets says so (they make noise, not music).
FAKE_MARKER = "FAKE_MAGENTA_RT_ASSETS.txt"

SPECTROSTREAM_SUBDIR = "savedmodels/ssv2_48k_stereo"
SPECTROSTREAM_PARTS = ("encoder", "decoder", "quantizer")
TOKENIZERS = ("auto", "numpy", "savedmodel")
# Probe latents for the load-time tokeniser check (frames).
_PROBE_FRAMES = 16


# ---- errors shared by the Magenta RT loaders ---------------------------------
class MissingMagentaRTAssetError(MissingAssetError):
  """A Magenta RT asset (SavedModel, checkpoint, vocabulary) is not on disk."""


class MagentaRTAssetError(ValueError):
  """A Magenta RT asset is on disk but not in the format Magenta RT v1 ships."""


def missing_asset_error(what: str, missing: pathlib.Path, asset_path: str,
                        flag: str, folder_desc: str
                        ) -> MissingMagentaRTAssetError:
  """The one message for a missing Magenta RT file: what, where, the fix."""
  return MissingMagentaRTAssetError(
      f"{what} not found: {missing} is missing. Magenta RT v1 ships it as "
      f"{asset_path} in the Hugging Face repo {HF_REPO} (also "
      f"{GCS_BUCKET}/{asset_path}); download it on a machine with network "
      f"access ({RECIPE}) and pass {folder_desc} as {flag}")


def savedmodel_files(folder: pathlib.Path) -> list[pathlib.Path]:
  """The files every SavedModel folder must hold, in check order."""
  data = sorted(folder.glob("variables/variables.data-*"))
  return [folder / "saved_model.pb", folder / "variables" / "variables.index",
          data[0] if data else
          folder / "variables" / "variables.data-00000-of-00001"]


def warn_if_fake(path: pathlib.Path) -> None:
  """Logs a warning when `path` lies in a tree of fake assets."""
  for p in (path, *list(path.parents)[:3]):
    if (p / FAKE_MARKER).exists():
      log.warning("%s holds FAKE Magenta RT assets written by "
                  "tools/make_fake_magenta_rt_assets.py (see %s): fine for "
                  "smoke tests, they make noise, not music", path,
                  p / FAKE_MARKER)
      return


def load_savedmodel(tf, folder: pathlib.Path, what: str):
  """tf.saved_model.load, with a clear error for an unreadable folder."""
  try:
    return tf.saved_model.load(str(folder))
  except Exception as e:  # TF raises many types for a bad file.
    raise MagentaRTAssetError(
        f"{what} at {folder} cannot be loaded as a TF SavedModel "
        f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
        f"the download may be incomplete: fetch the folder again "
        f"({RECIPE})") from e


# ---- files -------------------------------------------------------------------
def resolve_spectrostream_dir(path: str | os.PathLike) -> pathlib.Path:
  """The folder holding encoder/, decoder/ and quantizer/.

  Args:
    path: that folder (`.../savedmodels/ssv2_48k_stereo`), or the root of a
      Magenta RT asset tree that holds `savedmodels/ssv2_48k_stereo/`.
  """
  p = pathlib.Path(path).expanduser()
  if (p / SPECTROSTREAM_SUBDIR).is_dir():
    return p / SPECTROSTREAM_SUBDIR
  return p


def check_spectrostream_files(path: str | os.PathLike) -> pathlib.Path:
  """Checks every file the loader reads, before loading anything.

  Returns:
    The resolved folder (see `resolve_spectrostream_dir`).

  Raises:
    MissingMagentaRTAssetError: naming the first missing file and the fix.
  """
  if not str(path):
    raise MissingMagentaRTAssetError(
        "no SpectroStream folder given: set --config.magenta_rt.spectrostream"
        f"=DIR, the folder holding encoder/, decoder/ and quantizer/ "
        f"({SPECTROSTREAM_SUBDIR} of {HF_REPO}; {RECIPE})")
  folder = resolve_spectrostream_dir(path)
  flag = "--config.magenta_rt.spectrostream"
  desc = "the folder holding encoder/, decoder/ and quantizer/"
  if not folder.is_dir():
    raise missing_asset_error("SpectroStream", folder, SPECTROSTREAM_SUBDIR,
                              flag, desc)
  for part in SPECTROSTREAM_PARTS:
    for f in savedmodel_files(folder / part):
      if not f.is_file():
        raise missing_asset_error(
            f"SpectroStream {part} SavedModel", f,
            f"{SPECTROSTREAM_SUBDIR}/{part}/", flag, desc)
  return folder


# ---- the codec ----------------------------------------------------------------
def _only_array(out, what: str):
  """A converted function's single output (a tensor, 1-tuple or 1-dict)."""
  if isinstance(out, dict) and len(out) == 1:
    out = next(iter(out.values()))
  elif isinstance(out, (tuple, list)) and len(out) == 1:
    out = out[0]
  if not hasattr(out, "shape"):
    raise MagentaRTAssetError(
        f"SpectroStream {what} returns {type(out).__name__}, expected one "
        "tensor: not the SavedModel Magenta RT v1 ships")
  return out


class SpectroStreamCodec(Codec):
  """Magenta RT v1's SpectroStream behind the `Codec` interface.

  Build it with `load_spectrostream(path)`. Encoder and decoder run as JAX
  functions converted by tf2jax; `decode_latents` is jit/grad-safe.

  Args:
    encoder: the loaded encoder SavedModel (callable).
    decoder: the loaded decoder SavedModel (callable).
    quantizer: the loaded quantiser SavedModel.
    geometry: the token geometry; its codec fields must match the files.
    tokenizer: "numpy" (greedy L2 RVQ over the codebooks), "savedmodel"
      (the quantiser's own TF function, on CPU) or "auto" (numpy if it
      equals the SavedModel on probe latents, else the SavedModel).
    source: where the files came from (for messages).
  """

  def __init__(self, encoder, decoder, quantizer, geometry: Geometry = MRT_V1,
               *, tokenizer: str = "auto", source: str = "SpectroStream"):
    super().__init__(geometry)
    if tokenizer not in TOKENIZERS:
      raise ValueError(f"tokenizer {tokenizer!r}: use one of {TOKENIZERS}")
    self._source = source
    self._tf = import_tensorflow()
    self._tf2jax = import_optional("tf2jax", "converting SpectroStream to JAX")
    self._quantizer = quantizer
    self._codebooks = self._read_codebooks(quantizer)
    self._enc_fn, self._enc_params = self._convert(encoder, "encoder")
    self._dec_fn, self._dec_params = self._convert(decoder, "decoder")
    self._check_shapes()
    self._tokenizer = tokenizer
    if tokenizer == "auto":
      agree, total = self.check_tokenizer()
      self._tokenizer = "numpy" if agree == total else "savedmodel"
      if agree != total:
        warnings.warn(
            f"{source}: greedy L2 RVQ disagrees with the SavedModel quantiser "
            f"on {total - agree} of {total} probe codes; tokenising with the "
            "SavedModel (TF on CPU, slower)", stacklevel=2)

  # ---- loading -------------------------------------------------------------
  def _read_codebooks(self, quantizer) -> np.ndarray:
    """(L, V, D) from `_quantizers[i].embeddings`, each stored (D, V)."""
    g = self._geometry
    layers = getattr(quantizer, "_quantizers", None)
    if layers is None or not hasattr(quantizer,
                                     "inference_encoding_with_tf_function"):
      raise MagentaRTAssetError(
          f"{self._source}: the quantizer SavedModel has no `_quantizers` "
          "list or no `inference_encoding_with_tf_function`: not the "
          f"quantiser Magenta RT v1 ships ({SPECTROSTREAM_SUBDIR}/quantizer)")
    want = (g.codec_latent_dim, g.codebook_size)
    books = []
    for i, layer in enumerate(layers):
      emb = getattr(layer, "embeddings", None)
      shape = tuple(emb.shape) if emb is not None else None
      if shape != want:
        raise MagentaRTAssetError(
            f"{self._source}: quantizer._quantizers[{i}].embeddings has shape "
            f"{shape}, expected {want} (latent dim x codebook size of "
            f"geometry {g.name!r})")
      books.append(np.asarray(emb.numpy(), np.float32).T)
    if len(books) != g.codec_rvq_depth:
      raise MagentaRTAssetError(
          f"{self._source}: the quantizer has {len(books)} RVQ levels, "
          f"geometry {g.name!r} expects codec_rvq_depth="
          f"{g.codec_rvq_depth}")
    return np.stack(books)

  def _convert(self, model, what):
    """tf2jax of `model.__call__` -> (jitted jax fn, device params)."""
    g = self._geometry
    example = (np.zeros((1, g.sample_rate, g.channels), np.float32)
               if what == "encoder" else
               np.zeros((1, g.chunk_frames, g.codec_latent_dim), np.float32))
    try:
      with self._tf2jax.override_config("strict_shape_check", False):
        fn, params = self._tf2jax.convert(model.__call__, example)
    except Exception as e:  # tf2jax raises many types for unsupported ops.
      raise MagentaRTAssetError(
          f"{self._source}: the {what} SavedModel cannot be converted to JAX "
          f"with tf2jax ({type(e).__name__}: {e}); check the tf2jax version "
          f"against constraints.txt") from e
    return jax.jit(fn), jax.tree.map(jnp.asarray, params)

  def _run(self, fn, params, x, what):
    # Shapes other than the traced example's retrace; the check is off as in
    # Magenta RT (the graphs are shape-generic). TF graphs broadcast like
    # numpy (a (D,) bias onto (B, T, D)), which the project's
    # rank_promotion='raise' would refuse inside the converted code.
    with self._tf2jax.override_config("strict_shape_check", False), \
        jax.numpy_rank_promotion("allow"):
      out, _ = fn(params, x)
    return _only_array(out, what)

  def _check_shapes(self):
    """Encoder and decoder output shapes against the geometry (no compute)."""
    g = self._geometry
    d, spf, c = g.codec_latent_dim, g.samples_per_frame, g.channels
    checks = (
        ("encoder", self._enc_fn, self._enc_params, (1, 2 * spf, c),
         (1, 2, d)),
        ("decoder", self._dec_fn, self._dec_params, (1, 2, d),
         (1, 2 * spf, c)),
    )
    for what, fn, params, shape_in, want in checks:
      x = jax.ShapeDtypeStruct(shape_in, jnp.float32)
      try:
        out = jax.eval_shape(lambda p, v, f=fn, w=what: self._run(f, p, v, w),
                             params, x)
      except MagentaRTAssetError:
        raise
      except Exception as e:
        raise MagentaRTAssetError(
            f"{self._source}: the {what} does not accept float32 {shape_in} "
            f"({type(e).__name__}: {e}); geometry {g.name!r} needs "
            f"{g.sample_rate} Hz, {c} channels, {d}-dim latents") from e
      if tuple(out.shape) != want:
        raise MagentaRTAssetError(
            f"{self._source}: the {what} maps {shape_in} to "
            f"{tuple(out.shape)}, geometry {g.name!r} expects {want} "
            f"({spf} samples per frame, {c} channels, {d}-dim latents)")

  # ---- Codec ---------------------------------------------------------------
  @property
  def codebooks(self) -> np.ndarray:
    return self._codebooks

  @property
  def tokenizer(self) -> str:
    """"numpy" or "savedmodel": how `quantize` tokenises."""
    return self._tokenizer

  def _analyse(self, frames):
    return np.asarray(self._analyse_jnp(jnp.asarray(frames, jnp.float32)))

  def _analyse_jnp(self, frames):
    b, t, spf, c = frames.shape
    z = self._run(self._enc_fn, self._enc_params,
                  frames.reshape(b, t * spf, c), "encoder")
    if tuple(z.shape) != (b, t, self._geometry.codec_latent_dim):
      raise MagentaRTAssetError(
          f"{self._source}: the encoder maps {t} whole frames to latents of "
          f"shape {tuple(z.shape)}, expected "
          f"{(b, t, self._geometry.codec_latent_dim)}")
    return z

  def _synthesise(self, latents):
    b, t, _ = latents.shape
    spf, c = self._geometry.samples_per_frame, self._geometry.channels
    audio = self._run(self._dec_fn, self._dec_params, latents, "decoder")
    if tuple(audio.shape) != (b, t * spf, c):
      raise MagentaRTAssetError(
          f"{self._source}: the decoder maps {t} frames to audio of shape "
          f"{tuple(audio.shape)}, expected {(b, t * spf, c)}")
    return audio.reshape(b, t, spf, c)

  def quantize(self, latents: np.ndarray,
               num_levels: int | None = None) -> np.ndarray:
    """Greedy RVQ (..., D) -> int32 (..., K), numpy or the SavedModel's."""
    if self._tokenizer == "numpy":
      return super().quantize(latents, num_levels)
    latents = np.asarray(latents, np.float32)
    depth = self._geometry.codec_rvq_depth
    k = depth if num_levels is None else num_levels
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= depth:
      raise ValueError(f"num_levels={num_levels!r}: pass 1..{depth}")
    if latents.ndim == 0 or latents.shape[-1] != self._codebooks.shape[-1]:
      raise ValueError(
          f"latents of shape {latents.shape}: the last axis must be the "
          f"latent width D={self._codebooks.shape[-1]}")
    if not np.all(np.isfinite(latents)):
      raise ValueError("latents contain NaN or inf; check the encoder input")
    return self.quantize_savedmodel(latents, int(k))

  def quantize_savedmodel(self, latents: np.ndarray,
                          num_levels: int | None = None) -> np.ndarray:
    """The SavedModel's `inference_encoding_with_tf_function`, on CPU.

    Args:
      latents: float (..., D) latents.
      num_levels: K levels to return (default all).

    Returns:
      int32 (..., K) codes.
    """
    depth = self._geometry.codec_rvq_depth
    k = depth if num_levels is None else int(num_levels)
    x = np.asarray(latents, np.float32)
    lead = x.shape[:-1]
    flat = x.reshape(1, -1, x.shape[-1])
    # Always all levels, as Magenta RT asks: a SavedModel function may have
    # been traced for num_quantizers=64 only.
    toks = np.asarray(self._quantizer.inference_encoding_with_tf_function(
        self._tf.constant(flat), num_quantizers=depth))
    if toks.shape != (depth, 1, flat.shape[1]):
      raise MagentaRTAssetError(
          f"{self._source}: the quantizer returned tokens of shape "
          f"{toks.shape}, expected (K, B, T) = {(depth, 1, flat.shape[1])}")
    codes = np.transpose(toks, (1, 2, 0))[0, :, :k]
    return codes.astype(np.int32).reshape(*lead, k)

  def check_tokenizer(self, seed: int = 0) -> tuple[int, int]:
    """Numpy RVQ vs the SavedModel on probe latents -> (agreeing, total)."""
    rng = np.random.default_rng(seed)
    books = self._codebooks
    depth, size, _ = books.shape
    idx = rng.integers(0, size, (_PROBE_FRAMES, depth))
    # Sums of codewords, as real latents are, plus a little off-grid noise.
    probe = books[np.arange(depth), idx].sum(axis=1)
    probe = probe + 0.01 * probe.std() * rng.standard_normal(probe.shape)
    ours = rvq_quantize(probe.astype(np.float32), books, depth)
    theirs = self.quantize_savedmodel(probe.astype(np.float32), depth)
    return int((ours == theirs).sum()), int(ours.size)


def load_spectrostream(path: str | os.PathLike,
                       geometry: Geometry = MRT_V1, *,
                       tokenizer: str = "auto") -> SpectroStreamCodec:
  """Loads SpectroStream from Magenta RT's SavedModels.

  Args:
    path: the folder holding encoder/, decoder/ and quantizer/
      (`savedmodels/ssv2_48k_stereo`), or an asset root that holds it.
    geometry: the token geometry (its codec fields must match the files).
    tokenizer: see `SpectroStreamCodec`.

  Returns:
    A SpectroStreamCodec.

  Raises:
    MissingMagentaRTAssetError: a file is missing (named, with the fix).
    MagentaRTAssetError: a file is there but does not fit.
    InteropDependencyError: TensorFlow or tf2jax is not installed.
  """
  folder = check_spectrostream_files(path)
  warn_if_fake(folder)
  tf = import_tensorflow()
  import_optional("tf2jax", "converting SpectroStream to JAX")
  parts = {p: load_savedmodel(tf, folder / p, f"SpectroStream {p}")
           for p in SPECTROSTREAM_PARTS}
  return SpectroStreamCodec(parts["encoder"], parts["decoder"],
                            parts["quantizer"], geometry,
                            tokenizer=tokenizer, source=str(folder))
