"""Prompt text -> words of the reference style model's descriptor vocabulary,
and word lists -> the id / mask arrays its text tower takes.

Shape letters: B batch, Wd words per text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np


# ---- text parsing ------------------------------------------------------------
# Words that carry no style and are dropped without a warning
# ("techno music with flute" is a fine prompt).
STOP_WORDS = frozenset({
    "a", "an", "and", "the", "with", "of", "in", "on", "some", "music",
    "style", "song", "track", "tune", "feat", "featuring", "plus"})

# Common spellings of vocabulary words. A key is a word sequence joined by "_"
# after lowercasing; phrases made of vocabulary words written with spaces or
# hyphens ("drum and bass", "bossa-nova") are matched without entries here.
ALIASES = {
    "dnb": "drum_and_bass",
    "d_n_b": "drum_and_bass",
    "drum_n_bass": "drum_and_bass",
    "drum_&_bass": "drum_and_bass",
    "drumandbass": "drum_and_bass",
    "hip_hop": "hiphop",
    "lo_fi": "lofi",
    "lofi_hip_hop": "lofi_hiphop",
    "lo_fi_hip_hop": "lofi_hiphop",
    "bossa": "bossa_nova",
    "bossanova": "bossa_nova",
    "strings_ensemble": "string_ensemble",
    "e_piano": "electric_piano",
    "epiano": "electric_piano",
    "sax": "saxophone",
}
_MAX_PHRASE = 4
_SPLIT = re.compile(r"[\s,;/|+]+")


def parse_text(text: str, vocab: Sequence[str]
               ) -> tuple[list[str], list[str]]:
  """A prompt -> (known vocabulary words, unknown words), both de-duplicated.

  Lowercase; split on whitespace, commas, semicolons, slashes, '|' and '+';
  '-' and '_' join parts of one descriptor ("drum_and_bass", "drum-and-bass"
  and "drum and bass" all give `drum_and_bass`). Longest matches win, so
  "jazz piano trio" is the style, while "piano trio jazz" is three words.
  Stop words ("with", "music", ...) are dropped silently.
  """
  vocab_set = set(vocab)
  parts: list[str] = []
  for tok in _SPLIT.split(text.strip().lower()):
    tok = tok.replace("-", "_").strip("_.!?:'\"()[]{}")
    if not tok:
      continue
    if tok in vocab_set or tok in ALIASES:
      parts.append(tok)  # Keep known multi-part descriptors whole.
    else:
      parts.extend(p for p in tok.split("_") if p)
  known, unknown = [], []
  i = 0
  while i < len(parts):
    for n in range(min(_MAX_PHRASE, len(parts) - i), 0, -1):
      phrase = "_".join(parts[i:i + n])
      word = phrase if phrase in vocab_set else ALIASES.get(phrase)
      if word is not None and word in vocab_set:
        known.append(word)
        i += n
        break
    else:
      if parts[i] not in STOP_WORDS:
        unknown.append(parts[i])
      i += 1
  return list(dict.fromkeys(known)), list(dict.fromkeys(unknown))


def encode_words(word_lists: Sequence[Sequence[str]], vocab: Sequence[str],
                 width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Lists of vocabulary words -> int32 ids (B, Wd) and float32 mask (B, Wd).

  Wd is `width`, or the longest list rounded up to a multiple of 8 (fewer
  distinct shapes, fewer recompiles).
  """
  index = {w: i for i, w in enumerate(vocab)}
  longest = max(len(w) for w in word_lists)
  if width is None:
    width = max(8, -(-longest // 8) * 8)
  if longest > width:
    raise ValueError(f"a text has {longest} words; width is {width}")
  ids = np.zeros((len(word_lists), width), np.int32)
  mask = np.zeros((len(word_lists), width), np.float32)
  for b, words in enumerate(word_lists):
    ids[b, :len(words)] = [index[w] for w in words]
    mask[b, :len(words)] = 1.0
  return ids, mask
