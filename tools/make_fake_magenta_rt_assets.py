"""Writes small FAKE Magenta RT v1 assets, for offline smoke tests.

  python tools/make_fake_magenta_rt_assets.py /tmp/fake_mrt
  python tools/make_fake_magenta_rt_assets.py /tmp/fake_mrt --teacher

Same layout, formats, SavedModel signatures, shapes and checkpoint variable
names as the real assets of the Hugging Face repo google/magenta-realtime
(see mrt_distill/interop/fake_assets.py), but cheap linear models inside:
they make noise, not music. Never downloads anything. About 110 MB and 10 s.

With --teacher, OUT/teacher also gets a tiny random teacher at geometry
mrt_v1 (about 7 MB), so the whole Magenta RT world loads:

  python -c "from mrt_distill.world.runtime import load_world;
    print(load_world(dict(world='magenta_rt', magenta_rt=dict(gin='',
          teacher='OUT/teacher', spectrostream='OUT', musiccoca='OUT'))))"

Needs the interop extra (TensorFlow, tf2jax, sentencepiece):
pip install -c constraints.txt -e ".[interop]". Recipe for the real assets:
docs/real_magenta_rt.md.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
# Before TensorFlow loads: its C++ logging reads this once.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None) -> int:
  p = argparse.ArgumentParser(
      description=__doc__.split("\n\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("out", help="asset root to write (created)")
  p.add_argument("--seed", type=int, default=0, help="weight seed")
  p.add_argument("--teacher", action="store_true",
                 help="also write a tiny mrt_v1 teacher to OUT/teacher")
  args = p.parse_args(argv)

  from mrt_distill.interop import InteropDependencyError
  from mrt_distill.interop import fake_assets

  start = time.time()
  try:
    paths = fake_assets.write_fake_magenta_rt_assets(args.out, seed=args.seed)
  except InteropDependencyError as e:
    print(f"make_fake_magenta_rt_assets: error: {e}", file=sys.stderr)
    return 1
  root = paths["root"].resolve()
  for name, path in paths.items():
    if name != "root":
      print(f"{name:16s} {path}")
  teacher = ""
  if args.teacher:
    gin = fake_assets.write_fake_teacher(root / "teacher", seed=args.seed)
    teacher = str(gin.parent)
    print(f"{'teacher':16s} {teacher} (gin {gin})")
  size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
  print(f"wrote {size / 2**20:.0f} MiB of FAKE assets under {root} in "
        f"{time.time() - start:.1f} s")
  print("use them as: --config.magenta_rt.spectrostream=" f"{root} "
        f"--config.magenta_rt.musiccoca={root}"
        + (f" --config.magenta_rt.teacher={teacher} "
           "--config.magenta_rt.gin=" if teacher else ""))
  return 0


if __name__ == "__main__":
  sys.exit(main())
