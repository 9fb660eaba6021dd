"""Real-time session benchmark: does a student keep up for a whole set?

  python tools/bench_session.py --checkpoint random-tiny --minutes 10 --json
  python tools/bench_session.py --checkpoint reference --minutes 1 --json

Why a separate benchmark: tools/bench_chunk_step.py times single chunk steps
and a few seconds of playback. A live set runs for many minutes, and what a
player notices there is not the mean step time but the tail: one slow chunk
(a GC pause, another process, a recompile) is a click everyone hears. So
this plays a `StreamSession` at the default settings for `--minutes` of
audio exactly as a sound card would: a consumer thread reads one
chunk-sized block per chunk duration on a monotonic clock and never waits
(`read(timeout=None)`, like an audio callback; a block that is not ready is
an underrun), while the main thread changes the prompt every
`--prompt-every` seconds, as a performer would.

It prints one JSON object: minutes, chunks, underruns, chunk_ms_p50/p95/max
(every chunk of the run, from the session's subscriber info), the control
delay p50/p95 (`StreamSession.stats()`: from `set_prompt` to the first
played sample produced with it; the session keeps the last 512 changes),
compiles during the run (should be 0), and memory: the process's peak RSS
(ru_maxrss, including loading) and its RSS at the start and end of the run
(growth over a long run is a leak).
"""

from __future__ import annotations

import argparse
import json
import logging
import pathlib
import sys
import threading
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from mrt_distill.info import peak_rss_mib, rss_mib  # noqa: E402

# Prompts the run cycles through (words both reference-world vocabularies
# know, as in tools/bench_chunk_step.py).
PROMPTS = ("techno", "jazz", "rock", "funk")


def _pct(values, q) -> float | None:
  return float(np.percentile(values, q)) if values else None


def bench(checkpoint: str, minutes: float, prompt_every: float = 4.0,
          lead_chunks: int = 2, seed: int = 0) -> dict:
  import jax
  from mrt_distill.serve.bundle import load_student
  from mrt_distill.serve.session import StreamSession

  bundle = load_student(checkpoint)
  session = StreamSession(bundle.stepper(), bundle.params, bundle.style_model,
                          lead_chunks=lead_chunks, seed=seed,
                          prompt=PROMPTS[0])
  session.next_chunk()  # compile outside the clock
  compiles0 = session.stepper.compiles
  chunk_ms: list[float] = []
  session.subscribe(lambda _audio, info: chunk_ms.append(info["chunk_ms"]))
  session.start(wait=True, timeout=600)

  chunk_s = session.chunk_seconds
  n_blocks = max(1, round(60 * minutes / chunk_s))
  late = [0]  # blocks the consumer itself read over a chunk late

  def sound_card():
    t_next = time.monotonic()
    for _ in range(n_blocks):
      now = time.monotonic()
      if t_next > now:
        time.sleep(t_next - now)
      elif now - t_next > chunk_s:
        late[0] += 1
      session.read(session.chunk_samples, timeout=None)
      t_next += chunk_s

  rss_start = rss_mib()
  t0 = time.monotonic()
  card = threading.Thread(target=sound_card, name="sound-card", daemon=True)
  card.start()
  changes = 0
  while card.is_alive():
    card.join(timeout=prompt_every)
    if card.is_alive():
      changes += 1
      session.set_prompt(PROMPTS[changes % len(PROMPTS)])
  wall = time.monotonic() - t0
  session.stop(timeout=30)
  rss_end = rss_mib()
  st = session.stats()
  return {
      "checkpoint": checkpoint, "geometry": session.geometry.name,
      "device": str(jax.devices()[0]),
      "minutes": n_blocks * chunk_s / 60, "wall_seconds": wall,
      "chunk_seconds": chunk_s, "lead_chunks": lead_chunks,
      "chunks": n_blocks, "chunks_produced": st["chunks"],
      "underruns": st["underruns"], "consumer_late_blocks": late[0],
      "chunk_ms_p50": _pct(chunk_ms, 50), "chunk_ms_p95": _pct(chunk_ms, 95),
      "chunk_ms_max": max(chunk_ms) if chunk_ms else None,
      "rtf": (1000 * chunk_s / _pct(chunk_ms, 50)) if chunk_ms else None,
      "prompt_changes": changes,
      "control_delay_ms_p50": st["control_delay_ms_p50"],
      "control_delay_ms_p95": st["control_delay_ms_p95"],
      "session_errors": st["errors"],
      "compiles_during_run": session.stepper.compiles - compiles0,
      "peak_rss_mib": peak_rss_mib(),
      "rss_start_mib": rss_start, "rss_end_mib": rss_end,
  }


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--checkpoint", default="reference",
                 help="'reference', 'random-tiny', a distill workdir or a "
                      "student .npz (as `mrt-distill serve`)")
  p.add_argument("--minutes", type=float, default=10.0,
                 help="minutes of audio played in real time")
  p.add_argument("--prompt-every", type=float, default=4.0,
                 help="seconds between prompt changes")
  p.add_argument("--lead-chunks", type=int, default=2,
                 help="chunks the producer keeps ready (the serve default)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--json", action="store_true",
                 help="print one JSON object (default: a Python dict)")
  args = p.parse_args(argv)
  if args.minutes <= 0 or args.prompt_every <= 0:
    p.error("--minutes and --prompt-every must be > 0")
  logging.basicConfig(level=logging.WARNING)
  out = bench(args.checkpoint, args.minutes, args.prompt_every,
              args.lead_chunks, args.seed)
  print(json.dumps(out, indent=2) if args.json else out)
  return 0


if __name__ == "__main__":
  sys.exit(main())
