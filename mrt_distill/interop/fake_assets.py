"""Small fake Magenta RT v1 assets, in the real on-disk formats and names.

The real SpectroStream / MusicCoCa files cannot be downloaded here (and CI
has no network), so the loaders in `codec/spectrostream.py` and
`style/musiccoca.py` are tested on files this module writes: the same folder
layout as the Hugging Face repo `google/magenta-realtime`, TF SavedModels
with the same callables, signatures, input/output names and tensor shapes,
the quantiser checkpoint with the same variable names and the same
string-sorted level order, and a real SentencePiece model. Only the maths
inside is cheap:

  SpectroStream   encoder: zero-pad to whole 1920-sample frames, then a
                  fixed linear projection of each stereo frame (3840 samples)
                  onto 256 DCT latents plus a (zero) bias -- exactly
                  `MinimalCodec(MRT_V1, seed)`'s analysis; decoder: its
                  transpose; quantiser: greedy L2 RVQ in TF over
                  MinimalCodec's 64 x 1024 x 256 codebooks, stored as
                  `_quantizers[i].embeddings` (256, 1024).
  MusicCoCa       embed_text: masked mean of token + position embeddings,
                  scaled to norm 28 (real MusicCoCa norms are near 28);
                  embed_music: tanh of a projection of 25 ms frames, averaged
                  over time, norm 28; quantiser: 12 x 1024 seeded codebooks.
  vocabulary      SentencePiece unigram model (pad 0, eos/SOS 1, unk 2)
                  trained on a few music descriptions.

Writes about 110 MB, most of it the two quantisers at their real sizes
(64 x 256 x 1024 and 12 x 768 x 1024 float32). Never downloads anything.
Everything is deterministic in `seed`.

  write_fake_magenta_rt_assets(root)   the asset tree (codec + style)
  write_fake_teacher(dst)              a tiny teacher at geometry mrt_v1
"""

from __future__ import annotations

import io
import os
import pathlib

import numpy as np

from mrt_distill.codec.base import MinimalCodec
from mrt_distill.codec.base import seeded_rng
from mrt_distill.codec.base import seeded_rvq_codebooks
from mrt_distill.codec.spectrostream import FAKE_MARKER
from mrt_distill.codec.spectrostream import SPECTROSTREAM_SUBDIR
from mrt_distill.codec.spectrostream import import_optional
from mrt_distill.codec.spectrostream import import_tensorflow
from mrt_distill.geometry import MRT_V1
from mrt_distill.style import musiccoca as mc

# Norm of the fake MusicCoCa embeddings (and the scale of its codebooks).
EMBED_NORM = 28.0
# Samples per analysis frame of the fake music tower (25 ms at 16 kHz).
_MUSIC_FRAME = 400

# Lines the fake SentencePiece model is trained on.
_CORPUS = """\
ambient synth pads with slow evolving textures
funk bass guitar with tight drums
jazz piano trio with brushed snare
dark techno with a driving kick drum
lofi hip hop beats with vinyl crackle
orchestral strings and warm french horns
bossa nova acoustic guitar and soft vocals
drum and bass with fast breakbeats
heavy metal electric guitar riffs
reggae organ skank and deep bass
classical harpsichord baroque counterpoint
upbeat disco strings and four on the floor
cinematic percussion and epic choir
chill electronic melody with warm rhodes
country fiddle and steel guitar
latin percussion congas and timbales
minimal house groove with hi hats
psychedelic rock with fuzzy guitar
gentle lullaby music box melody
blues harmonica and slide guitar
"""

_README = """\
FAKE Magenta RT v1 assets, written by tools/make_fake_magenta_rt_assets.py
(mrt_distill.interop.fake_assets). Same folder layout, file formats,
SavedModel signatures, tensor shapes and checkpoint variable names as the
real assets of google/magenta-realtime, but the models inside are cheap
linear stand-ins: they make noise, not music. For offline smoke tests of the
loaders only. The real recipe: docs/real_magenta_rt.md.
"""


def write_fake_magenta_rt_assets(root: str | os.PathLike, *, seed: int = 0
                                 ) -> dict[str, pathlib.Path]:
  """Writes the fake asset tree under `root` (created; files overwritten).

  Layout (as in google/magenta-realtime):

    root/FAKE_MAGENTA_RT_ASSETS.txt
    root/savedmodels/ssv2_48k_stereo/{encoder,decoder,quantizer}/
    root/savedmodels/musiccoca_mv212f_cpu_novocab/
    root/savedmodels/musiccoca_mv212_quant/
    root/vocabularies/musiccoca_mv212f_vocab.model

  Args:
    root: the asset root.
    seed: seeds every weight.

  Returns:
    {"root", "spectrostream", "musiccoca_model", "musiccoca_quant",
    "musiccoca_vocab"} -> paths.
  """
  tf = import_tensorflow()
  root = pathlib.Path(root)
  root.mkdir(parents=True, exist_ok=True)
  (root / FAKE_MARKER).write_text(_README)
  paths = {"root": root, "spectrostream": root / SPECTROSTREAM_SUBDIR,
           "musiccoca_model": root / mc.MUSICCOCA_MODEL_SUBDIR,
           "musiccoca_quant": root / mc.MUSICCOCA_QUANT_SUBDIR,
           "musiccoca_vocab": root / mc.MUSICCOCA_VOCAB}
  write_fake_spectrostream(tf, paths["spectrostream"], seed)
  vocab_size = write_fake_vocab(paths["musiccoca_vocab"])
  write_fake_musiccoca_model(tf, paths["musiccoca_model"], vocab_size, seed)
  write_fake_musiccoca_quant(tf, paths["musiccoca_quant"], seed)
  return paths


# ---- SpectroStream ---------------------------------------------------------------
def write_fake_spectrostream(tf, folder: pathlib.Path, seed: int = 0) -> None:
  """encoder/, decoder/, quantizer/ SavedModels (see the module docstring)."""
  g = MRT_V1
  spf, chans, dim = g.samples_per_frame, g.channels, g.codec_latent_dim
  ref = MinimalCodec(g, seed=seed)
  proj = ref.projection.astype(np.float32)  # (spf * C, D)

  class Encoder(tf.Module):

    def __init__(self):
      super().__init__(name="encoder")
      self.kernel = tf.Variable(proj, name="kernel")
      # Zero, but broadcast from rank 1 as real layers' biases are.
      self.bias = tf.Variable(np.zeros(dim, np.float32), name="bias")

    @tf.function(input_signature=[
        tf.TensorSpec([None, None, chans], tf.float32)])
    def __call__(self, audio):
      b, s = tf.shape(audio)[0], tf.shape(audio)[1]
      frames = (s + spf - 1) // spf  # ceil(S / 1920), as the real encoder
      audio = tf.pad(audio, [[0, 0], [0, frames * spf - s], [0, 0]])
      flat = tf.reshape(audio, [b, frames, spf * chans])
      return tf.einsum("btf,fd->btd", flat, self.kernel) + self.bias

  class Decoder(tf.Module):

    def __init__(self):
      super().__init__(name="decoder")
      self.kernel = tf.Variable(proj.T.copy(), name="kernel")
      self.bias = tf.Variable(np.zeros(chans, np.float32), name="bias")

    @tf.function(input_signature=[tf.TensorSpec([None, None, dim],
                                                tf.float32)])
    def __call__(self, latents):
      b, t = tf.shape(latents)[0], tf.shape(latents)[1]
      flat = tf.einsum("btd,df->btf", latents, self.kernel)
      return tf.reshape(flat, [b, t * spf, chans]) + self.bias

  class Level(tf.Module):

    def __init__(self, book_DxV, i):
      super().__init__(name=f"quantizer_{i}")
      self.embeddings = tf.Variable(book_DxV, name="embeddings")

  class Quantizer(tf.Module):

    def __init__(self, books_LxVxD):
      super().__init__(name="quantizer")
      self._quantizers = [Level(np.ascontiguousarray(b.T), i)
                          for i, b in enumerate(books_LxVxD)]

    @tf.function(input_signature=[
        tf.TensorSpec([None, None, dim], tf.float32),
        tf.TensorSpec([], tf.int32)])
    def inference_encoding_with_tf_function(self, embeddings,
                                            num_quantizers=64):
      residual = embeddings
      tokens = []
      for level in self._quantizers:
        book = level.embeddings  # (D, V)
        dist = (tf.reduce_sum(book * book, axis=0)[None, None, :]
                - 2.0 * tf.einsum("btd,dv->btv", residual, book))
        idx = tf.argmin(dist, axis=-1)  # int64, as a TF quantiser returns
        tokens.append(idx)
        residual -= tf.gather(tf.transpose(book), idx)
      return tf.stack(tokens)[:num_quantizers]  # (K, B, T)

  for name, module in (("encoder", Encoder()), ("decoder", Decoder()),
                       ("quantizer", Quantizer(ref.codebooks))):
    tf.saved_model.save(module, str(folder / name))


# ---- MusicCoCa ---------------------------------------------------------------------
def write_fake_vocab(path: pathlib.Path) -> int:
  """A SentencePiece model trained on `_CORPUS`; returns its vocab size."""
  spm = import_optional("sentencepiece", "the fake MusicCoCa vocabulary")
  path.parent.mkdir(parents=True, exist_ok=True)
  buf = io.BytesIO()
  # T5-style ids, as the v1 text path assumes: pad 0, eos 1 (v1 prepends it
  # as SOS), unk 2. One thread keeps the model byte-identical run to run.
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(_CORPUS.splitlines()), model_writer=buf,
      vocab_size=96, hard_vocab_limit=False, model_type="unigram",
      pad_id=0, eos_id=1, unk_id=2, bos_id=-1, num_threads=1,
      minloglevel=2)
  path.write_bytes(buf.getvalue())
  return spm.SentencePieceProcessor(model_file=str(path)).vocab_size()


def write_fake_musiccoca_model(tf, folder: pathlib.Path, vocab_size: int,
                               seed: int = 0) -> None:
  """The SavedModel with signatures embed_text and embed_music."""
  g = MRT_V1
  dim, length = g.style_embed_dim, mc.TEXT_LENGTH
  rng = seeded_rng(seed, "mrt_distill.interop.fake_assets.musiccoca")
  tok = rng.standard_normal((vocab_size, dim)).astype(np.float32)
  pos = 0.5 * rng.standard_normal((length, dim)).astype(np.float32)
  proj = (rng.standard_normal((_MUSIC_FRAME, dim)) * 3.0).astype(np.float32)
  bias = rng.standard_normal(dim).astype(np.float32)

  def to_norm(x):
    return EMBED_NORM * x / (tf.norm(x, axis=-1, keepdims=True) + 1e-6)

  class MusicCoCa(tf.Module):

    def __init__(self):
      super().__init__(name="musiccoca")
      self.token_embedding = tf.Variable(tok, name="token_embedding")
      self.position_embedding = tf.Variable(pos, name="position_embedding")
      self.music_projection = tf.Variable(proj, name="music_projection")
      self.music_bias = tf.Variable(bias, name="music_bias")

    @tf.function(input_signature=[
        tf.TensorSpec([1, length], tf.int32, name=mc.TEXT_IDS),
        tf.TensorSpec([1, length], tf.float32, name=mc.TEXT_PADDINGS)])
    def embed_text(self, inputs_0, inputs_0_1):
      emb = (tf.gather(self.token_embedding, inputs_0)
             + self.position_embedding[None])
      keep = (1.0 - inputs_0_1)[..., None]
      mean = (tf.reduce_sum(emb * keep, axis=1)
              / tf.maximum(tf.reduce_sum(keep, axis=1), 1.0))
      return {mc.TEXT_OUTPUT: to_norm(mean)}

    @tf.function(input_signature=[
        tf.TensorSpec([1, mc.CLIP_SAMPLES], tf.float32, name=mc.MUSIC_INPUT)])
    def embed_music(self, inputs_0):
      frames = tf.reshape(inputs_0, [1, -1, _MUSIC_FRAME])
      h = tf.tanh(tf.einsum("bnf,fd->bnd", frames, self.music_projection)
                  + self.music_bias)
      return {mc.MUSIC_OUTPUT: to_norm(tf.reduce_mean(h, axis=1))}

  model = MusicCoCa()
  tf.saved_model.save(model, str(folder), signatures={
      mc.TEXT_SIGNATURE: model.embed_text,
      mc.MUSIC_SIGNATURE: model.embed_music})


def fake_musiccoca_codebooks(seed: int = 0) -> np.ndarray:
  """float32 (12, 1024, 768) codebooks, levels in order."""
  g = MRT_V1
  return seeded_rvq_codebooks(
      seed, "mrt_distill.interop.fake_assets.musiccoca_quant",
      g.style_rvq_depth, g.style_codebook_size, g.style_embed_dim, EMBED_NORM)


def write_fake_musiccoca_quant(tf, folder: pathlib.Path, seed: int = 0
                               ) -> None:
  """The quantiser SavedModel: variables/{n} hold the levels in the string
  order of their names (0, 1, 10, 11, 2, ...), each stored (768, 1024)."""
  books = fake_musiccoca_codebooks(seed)
  depth = len(books)
  stored = sorted(range(depth), key=str)  # variable n holds level stored[n]
  variables = [tf.Variable(np.ascontiguousarray(books[level].T),
                           name=f"codebook_{level}") for level in stored]
  tf.saved_model.save(tf.train.Checkpoint(variables=variables), str(folder))


# ---- a tiny teacher at geometry mrt_v1 --------------------------------------------
FAKE_TEACHER_GIN = """\
# A tiny teacher at Magenta RT v1's geometry, for offline smoke tests of the
# Magenta RT world (written by mrt_distill.interop.fake_assets).
GEOMETRY = 'mrt_v1'
EMBED_DIM = 32
NUM_HEADS = 2
HEAD_DIM = 16
MLP_DIM = 64
DEPTH_MLP_DIM = 48
NUM_ENCODER_LAYERS = 1
NUM_TEMPORAL_LAYERS = 1
NUM_DEPTH_LAYERS = 1
TEMPORAL_RELPOS_BUCKETS = 32
TEMPORAL_RELPOS_MAX_DISTANCE = 128
DEPTH_RELPOS_BUCKETS = 8
DEPTH_RELPOS_MAX_DISTANCE = 16
DROPOUT_RATE = 0.0
DEPTH_DROPOUT_RATE = 0.0
ACTIVATION_DTYPE = 'float32'
"""


def write_fake_teacher(dst: str | os.PathLike, *, seed: int = 0
                       ) -> pathlib.Path:
  """A random tiny teacher checkpoint at geometry mrt_v1 (about 8 MB).

  Writes `dst/teacher_fake_mrt_v1.gin` and the teacher checkpoint
  (`save_teacher`) naming that gin file, so `load_teacher(dst)` and
  `--config.magenta_rt.gin=dst/teacher_fake_mrt_v1.gin` both work.

  Returns:
    The gin file's path.
  """
  from mrt_distill.teacher.load import load_teacher_config
  from mrt_distill.teacher.load import save_teacher
  from mrt_distill.teacher.model import numpy_init_params

  dst = pathlib.Path(dst).resolve()
  dst.mkdir(parents=True, exist_ok=True)
  gin_path = dst / "teacher_fake_mrt_v1.gin"
  gin_path.write_text(FAKE_TEACHER_GIN)
  cfg = load_teacher_config(gin_path)
  save_teacher(dst, numpy_init_params(cfg, seed), cfg,
               gin_name=str(gin_path), extra={"source": "fake"})
  return gin_path
