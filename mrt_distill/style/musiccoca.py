"""MusicCoCa, Magenta RT v1's style model, loaded from its TF SavedModel.

Shape letters: B batch, N audio samples, C channels, S style embedding width
(768), L style RVQ levels (12), V codebook size (1024).

Reference: reference/magenta_rt_v1.md §5.2, §6.1. Three files of a Magenta RT
asset tree (Hugging Face `google/magenta-realtime` or `gs://magenta-rt-public`):

  savedmodels/musiccoca_mv212f_cpu_novocab/   SavedModel, two signatures:
      embed_text(inputs_0=int32 (1, 128), inputs_0_1=float32 (1, 128))
          -> {"contrastive_txt_embed": (1, 768)}
      embed_music(inputs_0=float32 (1, 160000))
          -> {"contrastive_music_embed": (1, 768)}
  savedmodels/musiccoca_mv212_quant/variables/variables   TF checkpoint of
      the 12 RVQ codebooks, `variables/{n}/.ATTRIBUTES/VARIABLE_VALUE`, each
      (768, 1024); level l is variable QUANT_READ_ORDER[l] (the levels were
      stored in the string order of their names: 0, 1, 10, 11, 2, ...).
  vocabularies/musiccoca_mv212f_vocab.model   SentencePiece model.

Text: lowercase, SentencePiece ids, truncate to 127, prepend SOS id 1, pad
with 0 to 128; paddings are 1.0 at pad positions. Audio: channel average,
resample to 16 kHz, cut into 10 s clips (the last one zero-padded), embed
each clip and average. Like v1, one text or clip per call, on CPU.
Tokenisation is the base class's greedy L2 RVQ over the 12 codebooks.

One difference from v1: resampling uses librosa (soxr), v1 used resampy;
style embeddings of audio at other rates than 16 kHz differ slightly.
"""

from __future__ import annotations

import os
import pathlib
import re
from collections.abc import Sequence

import numpy as np

from mrt_distill.codec.spectrostream import MagentaRTAssetError
from mrt_distill.codec.spectrostream import import_optional
from mrt_distill.codec.spectrostream import import_tensorflow
from mrt_distill.codec.spectrostream import load_savedmodel
from mrt_distill.codec.spectrostream import missing_asset_error
from mrt_distill.codec.spectrostream import savedmodel_files
from mrt_distill.codec.spectrostream import warn_if_fake
from mrt_distill.codec.spectrostream import MissingMagentaRTAssetError
from mrt_distill.geometry import MRT_V1
from mrt_distill.geometry import Geometry
from mrt_distill.style.base import StyleModel
from mrt_distill.style.base import check_style_audio
from mrt_distill.style.base import check_texts

MUSICCOCA_MODEL_SUBDIR = "savedmodels/musiccoca_mv212f_cpu_novocab"
MUSICCOCA_QUANT_SUBDIR = "savedmodels/musiccoca_mv212_quant"
MUSICCOCA_VOCAB = "vocabularies/musiccoca_mv212f_vocab.model"
QUANT_CHECKPOINT = "variables/variables"  # prefix, inside the quant folder

TEXT_SIGNATURE = "embed_text"
TEXT_IDS, TEXT_PADDINGS = "inputs_0", "inputs_0_1"
TEXT_OUTPUT = "contrastive_txt_embed"
MUSIC_SIGNATURE = "embed_music"
MUSIC_INPUT = "inputs_0"
MUSIC_OUTPUT = "contrastive_music_embed"

TEXT_LENGTH = 128
SOS_ID = 1
PAD_ID = 0
SAMPLE_RATE = 16_000
CLIP_SAMPLES = 160_000  # 10 s at 16 kHz

_QUANT_KEY = re.compile(r"^variables/(\d+)/\.ATTRIBUTES/VARIABLE_VALUE$")


def quant_variable_name(n: int) -> str:
  return f"variables/{n}/.ATTRIBUTES/VARIABLE_VALUE"


def quant_read_order(depth: int) -> tuple[int, ...]:
  """Variable index of each level 0..depth-1.

  The quantiser SavedModel stored its levels sorted by name as strings, so
  variable j holds level sorted(range(depth), key=str)[j].
  """
  stored = sorted(range(depth), key=str)
  return tuple(stored.index(level) for level in range(depth))


# reference §5.2, spelled out: the order the v1 code reads the variables in.
QUANT_READ_ORDER = (0, 1, 4, 5, 6, 7, 8, 9, 10, 11, 2, 3)
assert quant_read_order(12) == QUANT_READ_ORDER


# ---- files -------------------------------------------------------------------
def resolve_musiccoca_root(path: str | os.PathLike) -> pathlib.Path:
  """The asset root holding savedmodels/ and vocabularies/.

  Args:
    path: that root, or its `savedmodels/musiccoca_mv212f_cpu_novocab`.
  """
  p = pathlib.Path(path).expanduser()
  if p.name == pathlib.PurePath(MUSICCOCA_MODEL_SUBDIR).name:
    return p.parent.parent
  return p


def check_musiccoca_files(path: str | os.PathLike) -> pathlib.Path:
  """Checks every file the loader reads, before loading anything.

  Returns:
    The asset root.

  Raises:
    MissingMagentaRTAssetError: naming the first missing file and the fix.
  """
  flag = "--config.magenta_rt.musiccoca"
  desc = "the asset root that holds savedmodels/ and vocabularies/"
  if not str(path):
    raise MissingMagentaRTAssetError(
        f"no MusicCoCa assets given: set {flag}=DIR, {desc} (from "
        f"google/magenta-realtime; docs/real_magenta_rt.md)")
  root = resolve_musiccoca_root(path)
  if not root.is_dir():
    raise missing_asset_error("MusicCoCa assets", root,
                              MUSICCOCA_MODEL_SUBDIR + "/", flag, desc)
  quant = root / MUSICCOCA_QUANT_SUBDIR
  data = sorted(quant.glob(QUANT_CHECKPOINT + ".data-*"))
  checks = [(f, "MusicCoCa SavedModel", MUSICCOCA_MODEL_SUBDIR + "/")
            for f in savedmodel_files(root / MUSICCOCA_MODEL_SUBDIR)]
  checks += [
      (quant / (QUANT_CHECKPOINT + ".index"), "MusicCoCa quantiser checkpoint",
       MUSICCOCA_QUANT_SUBDIR + "/"),
      (data[0] if data else
       quant / (QUANT_CHECKPOINT + ".data-00000-of-00001"),
       "MusicCoCa quantiser checkpoint", MUSICCOCA_QUANT_SUBDIR + "/"),
      (root / MUSICCOCA_VOCAB, "MusicCoCa SentencePiece vocabulary",
       MUSICCOCA_VOCAB),
  ]
  for f, what, asset in checks:
    if not f.is_file():
      raise missing_asset_error(what, f, asset, flag, desc)
  return root


def read_quant_codebooks(tf, prefix: pathlib.Path,
                         geometry: Geometry = MRT_V1) -> np.ndarray:
  """The 12 codebooks from the quantiser checkpoint, levels in order.

  Args:
    tf: the tensorflow module.
    prefix: checkpoint prefix (`.../musiccoca_mv212_quant/variables/variables`).
    geometry: gives style_rvq_depth, style_codebook_size, style_embed_dim.

  Returns:
    float32 (L, V, S) codebooks.
  """
  g = geometry
  try:
    reader = tf.train.load_checkpoint(str(prefix))
  except Exception as e:  # TF raises several types for a bad checkpoint.
    raise MagentaRTAssetError(
        f"MusicCoCa quantiser checkpoint {prefix} cannot be read "
        f"({type(e).__name__}); the download may be incomplete: fetch "
        f"{MUSICCOCA_QUANT_SUBDIR}/ again") from e
  shapes = reader.get_variable_to_shape_map()
  found = sorted(int(m.group(1)) for k in shapes if (m := _QUANT_KEY.match(k)))
  if found != list(range(g.style_rvq_depth)):
    raise MagentaRTAssetError(
        f"MusicCoCa quantiser checkpoint {prefix} holds codebook variables "
        f"{found}, expected variables/0..{g.style_rvq_depth - 1} "
        f"(style_rvq_depth of geometry {g.name!r})")
  want = (g.style_embed_dim, g.style_codebook_size)
  books = []
  for level, n in enumerate(quant_read_order(g.style_rvq_depth)):
    key = quant_variable_name(n)
    if tuple(shapes[key]) != want:
      raise MagentaRTAssetError(
          f"MusicCoCa quantiser variable {key} has shape "
          f"{tuple(shapes[key])}, expected {want} (style dim x codebook "
          f"size of geometry {g.name!r})")
    books.append(np.asarray(reader.get_tensor(key), np.float32).T)
  return np.stack(books)


# ---- the style model ----------------------------------------------------------
class MusicCoCaStyleModel(StyleModel):
  """Magenta RT v1's MusicCoCa behind the `StyleModel` interface.

  Build it with `load_musiccoca(path)`.

  Args:
    model: the loaded MusicCoCa SavedModel (signatures embed_text and
      embed_music).
    vocab: a sentencepiece.SentencePieceProcessor.
    codebooks: float32 (L, V, S) quantiser codebooks, levels in order.
    geometry: the token geometry; its style fields must match.
    source: where the files came from (for messages).
  """

  def __init__(self, model, vocab, codebooks: np.ndarray,
               geometry: Geometry = MRT_V1, *, source: str = "MusicCoCa"):
    super().__init__(geometry)
    g = geometry
    self._tf = import_tensorflow()
    self._source = source
    self._vocab = vocab
    want = (g.style_rvq_depth, g.style_codebook_size, g.style_embed_dim)
    codebooks = np.asarray(codebooks, np.float32)
    if codebooks.shape != want:
      raise MagentaRTAssetError(
          f"{source}: codebooks of shape {codebooks.shape}, geometry "
          f"{g.name!r} expects {want}")
    self._codebooks = codebooks
    self._text = self._signature(model, TEXT_SIGNATURE,
                                 (TEXT_IDS, TEXT_PADDINGS), TEXT_OUTPUT)
    self._music = self._signature(model, MUSIC_SIGNATURE, (MUSIC_INPUT,),
                                  MUSIC_OUTPUT)
    # Keep the SavedModel alive: signatures hold weak references to it.
    self._model = model

  def _signature(self, model, name, inputs, output):
    sigs = getattr(model, "signatures", {})
    if name not in sigs:
      raise MagentaRTAssetError(
          f"{self._source}: the SavedModel has no signature {name!r} (it has "
          f"{sorted(sigs)}): not {MUSICCOCA_MODEL_SUBDIR} of Magenta RT v1")
    sig = sigs[name]
    have_in = sorted(sig.structured_input_signature[1])
    have_out = sig.structured_outputs
    dim = self._geometry.style_embed_dim
    if (sorted(inputs) != have_in or output not in have_out
        or have_out[output].shape[-1] != dim):
      raise MagentaRTAssetError(
          f"{self._source}: signature {name!r} takes {have_in} and returns "
          f"{ {k: tuple(v.shape) for k, v in have_out.items()} }; expected "
          f"{sorted(inputs)} -> {output!r} of width {dim}")
    return sig

  @property
  def codebooks(self) -> np.ndarray:
    return self._codebooks

  # Not named `vocab`: serving reads `style_model.vocab` as a closed word
  # list to check prompts against, and SentencePiece embeds any text.
  @property
  def sentencepiece(self):
    """The sentencepiece.SentencePieceProcessor of the text path."""
    return self._vocab

  def text_inputs(self, text: str) -> tuple[np.ndarray, np.ndarray]:
    """One text -> (ids int32 (1, 128), paddings float32 (1, 128)).

    Lowercase, SentencePiece, truncate to 127, SOS id 1 first, pad with 0;
    paddings are 1.0 at pad positions.
    """
    pieces = list(self._vocab.EncodeAsIds(text.lower()))[:TEXT_LENGTH - 1]
    ids = np.full((1, TEXT_LENGTH), PAD_ID, np.int32)
    ids[0, 0] = SOS_ID
    ids[0, 1:1 + len(pieces)] = pieces
    paddings = np.ones((1, TEXT_LENGTH), np.float32)
    paddings[0, :1 + len(pieces)] = 0.0
    return ids, paddings

  def embed_text(self, texts: str | Sequence[str]) -> np.ndarray:
    """One text or a list of texts -> float32 (B, S)."""
    tf = self._tf
    out = []
    for t in check_texts(texts):
      ids, paddings = self.text_inputs(t)
      res = self._text(**{TEXT_IDS: tf.constant(ids),
                          TEXT_PADDINGS: tf.constant(paddings)})
      out.append(np.asarray(res[TEXT_OUTPUT], np.float32).reshape(-1))
    return np.stack(out)

  def embed_audio(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """(N,), (N, C) or (B, N, C) audio -> float32 (B, S), clip-averaged."""
    mono = check_style_audio(audio, sample_rate)  # (B, N), channel average
    if int(sample_rate) != SAMPLE_RATE:
      import librosa  # Slow to import; only needed to resample.
      mono = librosa.resample(mono, orig_sr=int(sample_rate),
                              target_sr=SAMPLE_RATE, axis=-1)
    return np.stack([self._embed_clips(x) for x in mono])

  def _embed_clips(self, x: np.ndarray) -> np.ndarray:
    """Mono 16 kHz (N,) -> (S,): mean over 10 s clips, the last zero-padded."""
    embs = []
    for start in range(0, max(len(x), 1), CLIP_SAMPLES):
      clip = np.zeros((1, CLIP_SAMPLES), np.float32)
      piece = x[start:start + CLIP_SAMPLES]
      clip[0, :len(piece)] = piece
      res = self._music(**{MUSIC_INPUT: self._tf.constant(clip)})
      embs.append(np.asarray(res[MUSIC_OUTPUT], np.float32).reshape(-1))
    return np.mean(embs, axis=0).astype(np.float32)


def load_musiccoca(path: str | os.PathLike,
                   geometry: Geometry = MRT_V1) -> MusicCoCaStyleModel:
  """Loads MusicCoCa (SavedModel, quantiser codebooks, vocabulary).

  Args:
    path: the Magenta RT asset root that holds savedmodels/ and
      vocabularies/ (or its savedmodels/musiccoca_mv212f_cpu_novocab).
    geometry: the token geometry (its style fields must match the files).

  Returns:
    A MusicCoCaStyleModel.

  Raises:
    MissingMagentaRTAssetError: a file is missing (named, with the fix).
    MagentaRTAssetError: a file is there but does not fit.
    InteropDependencyError: TensorFlow or sentencepiece is not installed.
  """
  root = check_musiccoca_files(path)
  warn_if_fake(root)
  tf = import_tensorflow()
  spm = import_optional("sentencepiece", "MusicCoCa's text path")
  model = load_savedmodel(tf, root / MUSICCOCA_MODEL_SUBDIR, "MusicCoCa")
  vocab_path = root / MUSICCOCA_VOCAB
  try:
    vocab = spm.SentencePieceProcessor(model_file=str(vocab_path))
  except Exception as e:  # sentencepiece raises RuntimeError / OSError.
    raise MagentaRTAssetError(
        f"{vocab_path} is not a SentencePiece model ({e}); fetch "
        f"{MUSICCOCA_VOCAB} again") from e
  books = read_quant_codebooks(
      tf, root / MUSICCOCA_QUANT_SUBDIR / QUANT_CHECKPOINT, geometry)
  return MusicCoCaStyleModel(model, vocab, books, geometry, source=str(root))
