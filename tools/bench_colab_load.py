"""Times the Colab notebook's load cell (load the student, compile the chunk
step, start the session), cold and warm, by running the notebook headless in
a Jupyter kernel on this interpreter, as tests/test_colab.py does.

  python tools/bench_colab_load.py --checkpoint reference --json

Cold = an empty JAX compilation cache folder; warm = the same folder again
(what a second "Run all" in one Colab session, or a rerun on a laptop,
sees). The install cell is skipped (MRT_DISTILL_COLAB_TEST=1 runs the
notebook with a simulated listener). Prints each run's load-cell seconds.
"""

from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "colab" / "mrt_distill_live.ipynb"
LOAD_MARK = "from mrt_distill.serve.bundle import load_student"


def _seconds(cell) -> float:
  ex = cell.metadata.get("execution", {})
  t0 = datetime.datetime.fromisoformat(ex["iopub.execute_input"].rstrip("Z"))
  t1 = datetime.datetime.fromisoformat(ex["shell.execute_reply"].rstrip("Z"))
  return (t1 - t0).total_seconds()


def run_once(checkpoint: str, cache: pathlib.Path, tmp: pathlib.Path
             ) -> float:
  import nbformat
  from jupyter_client.kernelspec import KernelSpecManager
  from jupyter_client.manager import AsyncKernelManager
  from nbclient import NotebookClient
  env = {"MRT_DISTILL_COLAB_TEST": "1", "MRT_DISTILL_CHECKPOINT": checkpoint,
         "MRT_DISTILL_COLAB_WAV": str(tmp / "live.wav"),
         "MRT_DISTILL_COLAB_CHUNKS": "4", "JAX_PLATFORMS": "cpu",
         "MRT_DISTILL_CACHE_DIR": str(cache)}
  spec = tmp / "kernels" / "bench"
  spec.mkdir(parents=True, exist_ok=True)
  (spec / "kernel.json").write_text(json.dumps({
      "argv": [sys.executable, "-m", "ipykernel_launcher", "-f",
               "{connection_file}"], "display_name": "bench",
      "language": "python", "env": env}))
  km = AsyncKernelManager(kernel_name="bench", kernel_spec_manager=(
      KernelSpecManager(kernel_dirs=[str(tmp / "kernels")])))
  nb = nbformat.read(NOTEBOOK, as_version=4)
  NotebookClient(nb, km=km, timeout=600, startup_timeout=120,
                 record_timing=True,
                 resources={"metadata": {"path": str(tmp)}}).execute()
  load = [c for c in nb.cells if c.cell_type == "code"
          and LOAD_MARK in c.source]
  return _seconds(load[0])


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--checkpoint", default="reference")
  ap.add_argument("--warm-runs", type=int, default=2)
  ap.add_argument("--json", action="store_true")
  args = ap.parse_args(argv)
  with tempfile.TemporaryDirectory() as d:
    tmp = pathlib.Path(d)
    cache = tmp / "jax_cache"
    cold = run_once(args.checkpoint, cache, tmp)
    warm = [run_once(args.checkpoint, cache, tmp)
            for _ in range(args.warm_runs)]
  out = {"checkpoint": args.checkpoint, "load_cell_cold_s": cold,
         "load_cell_warm_s": warm}
  print(json.dumps(out, indent=2) if args.json else
        f"load cell: cold {cold:.1f} s, warm "
        + ", ".join(f"{w:.1f}" for w in warm) + " s")
  return 0


if __name__ == "__main__":
  sys.exit(main())
