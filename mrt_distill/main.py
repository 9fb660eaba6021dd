"""`mrt-distill` command line. Kept thin: parse, then call one library function.

Subcommands:
  info                      versions, devices, the default geometry and teacher sizes
  import-t5x SRC DST        Magenta RT v1 t5x checkpoint -> teacher checkpoint (orbax)
  teacher-stream            stream a teacher to a wav (default: the reference teacher)
  distill                   distil a one-step student (default: configs/reference_cpu.py)
  generate                  student (or teacher) audio for a prompt -> wav + spectrogram
  serve                     local web player + OSC control of a live student stream
  eval                      student vs teacher evaluation report
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pathlib
import sys

# Commands that compile JAX programs and so use the persistent compilation
# cache (a rerun loads the compiled chunk step instead of compiling it).
_CACHED_COMMANDS = ("teacher-stream", "distill", "generate", "serve", "eval")


def compilation_cache_dir() -> pathlib.Path:
  """Per user: $MRT_DISTILL_CACHE_DIR, else $XDG_CACHE_HOME/mrt_distill/jax
  (~/.cache/mrt_distill/jax)."""
  env = os.environ.get("MRT_DISTILL_CACHE_DIR")
  if env:
    return pathlib.Path(env)
  base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
  return pathlib.Path(base) / "mrt_distill" / "jax"


def enable_compilation_cache(path: pathlib.Path | None = None) -> bool:
  """JAX's persistent compilation cache in `path` (default
  `compilation_cache_dir()`), for programs that took >= 0.5 s to compile.
  Set before jax is imported (through its environment variables, read at
  import) or through jax.config after. -> False when the folder cannot be
  made (a read-only home: the run goes on uncached)."""
  path = path or compilation_cache_dir()
  try:
    path.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    logging.getLogger("mrt_distill").warning(
        "compilation cache off: cannot create %s (%s)", path, e.strerror)
    return False
  settings = {"jax_compilation_cache_dir": str(path),
              "jax_persistent_cache_min_compile_time_secs": 0.5,
              "jax_persistent_cache_min_entry_size_bytes": 0}
  if "jax" in sys.modules:
    import jax
    for k, v in settings.items():
      jax.config.update(k, v)
  else:
    for k, v in settings.items():
      os.environ.setdefault(k.upper(), str(v))
  return True


def _cmd_info(args) -> int:
  from mrt_distill import info
  report = info.collect(args.gin)
  print(json.dumps(report, indent=2) if args.json else info.format_report(report))
  return 0


def _cmd_import_t5x(args) -> int:
  from mrt_distill.teacher import load
  summary = load.import_t5x(args.src, args.dst, gin=args.gin)
  print(f"imported {summary['tensors']} tensors, {summary['params']:,} "
        f"parameters (step {summary['step']}, config {summary['config']}) "
        f"-> {args.dst}")
  return 0


def _cmd_teacher_stream(args) -> int:
  from mrt_distill.teacher import stream_cli
  stream_cli.run(args)
  return 0


def _cmd_distill(args) -> int:
  from mrt_distill.distill import cli
  return cli.run(args)


# Subcommands whose arguments live next to their code: (name, module, help).
# Each module has `add_arguments(parser)` and `run(args) -> int`.
_MODULE_COMMANDS = (
    ("generate", "mrt_distill.serve.generate",
     "generate audio with a student (or --teacher) -> wav + spectrogram PNG"),
    ("serve", "mrt_distill.serve.server_cli",
     "local web player (WebSocket, 127.0.0.1) and OSC control"),
    ("eval", "mrt_distill.eval.cli",
     "student vs teacher report: quality, stability, transitions, speed"),
)


def _module_command(module_name: str):
  def run(args) -> int:
    import importlib
    return importlib.import_module(module_name).run(args)
  return run


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog="mrt-distill",
      description="Distill Magenta RealTime into a one-step streaming student.")
  p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
  p.add_argument("--no-cache", action="store_true",
                 help="do not use the persistent JAX compilation cache "
                      f"({compilation_cache_dir()}; also after the command)")
  sub = p.add_subparsers(dest="command", metavar="COMMAND")

  s = sub.add_parser("info", help="versions, devices, geometry, teacher sizes")
  s.add_argument("--gin", default="base",
                 help="teacher gin config whose sizes to print (default base)")
  s.add_argument("--json", action="store_true", help="print JSON")
  s.set_defaults(fn=_cmd_info)

  s = sub.add_parser(
      "import-t5x",
      help="convert a Magenta RT v1 t5x checkpoint to a teacher checkpoint")
  s.add_argument("src", help="t5x checkpoint dir (checkpoint_<step> or parent)")
  s.add_argument("dst", help="output directory (orbax params + teacher.json)")
  s.add_argument("--gin", default="base",
                 help="teacher gin config: tiny | base | large | path.gin")
  s.set_defaults(fn=_cmd_import_t5x)

  s = sub.add_parser("teacher-stream",
                     help="stream the teacher chunk by chunk into a wav file")
  s.add_argument("--checkpoint", default="reference",
                 help="'reference' (the shipped reference world, default), "
                      "'random-tiny', or a teacher checkpoint dir")
  s.add_argument("--prompt", default="techno:1.0",
                 help='weighted prompt mix, e.g. "techno:1, flute:0.5"')
  s.add_argument("--seconds", type=float, default=4.0)
  s.add_argument("--seed", type=int, default=0)
  s.add_argument("--guidance-weight", type=float, default=3.0)
  s.add_argument("--temperature", type=float, default=1.0)
  s.add_argument("--top-k", type=int, default=40)
  s.add_argument("--out", default="teacher.wav")
  s.set_defaults(fn=_cmd_teacher_stream)

  s = sub.add_parser(
      "distill", help="distil a one-step student from teacher rollouts",
      epilog="Override any config value with --config.KEY=VALUE, e.g. "
             "--config.train.steps=3000 --config.losses.spectral=0")
  s.add_argument("--config", default="reference_cpu",
                 help="config file (path.py[:arg]) or shipped config name "
                      "(default reference_cpu)")
  s.add_argument("--workdir", default="runs/reference_cpu",
                 help="checkpoints, metrics, report (resumes if present)")
  s.add_argument("--no-report", action="store_true",
                 help="skip the student-vs-teacher report at the end")
  g = s.add_argument_group(
      "multi-host", "one process per host; automatic on Cloud TPU pods, "
      "else these flags or MRT_COORDINATOR / MRT_NUM_PROCESSES / "
      "MRT_PROCESS_ID (docs/scale_out.md)")
  g.add_argument("--coordinator", default=None, help="host:port of process 0")
  g.add_argument("--num-processes", default=None,
                 help="number of processes (or 'auto': JAX's cluster "
                      "detection)")
  g.add_argument("--process-id", type=int, default=None)
  s.set_defaults(fn=_cmd_distill, config_overrides=[])

  import importlib
  for name, module_name, help_text in _MODULE_COMMANDS:
    try:
      module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
      if not e.name or not e.name.startswith("mrt_distill"):
        raise
      continue  # not in this version
    s = sub.add_parser(name, help=help_text)
    module.add_arguments(s)
    s.set_defaults(fn=_module_command(module_name))
  for name in _CACHED_COMMANDS:  # also accepted after the command's name
    if name in sub.choices:
      sub.choices[name].add_argument(
          "--no-cache", action="store_true", default=argparse.SUPPRESS,
          help="do not use the persistent JAX compilation cache")
  return p


def main(argv=None) -> int:
  parser = build_parser()
  args, unknown = parser.parse_known_args(argv)
  # `distill` takes ml-collections style --config.KEY=VALUE overrides.
  overrides = [u[len("--config."):] for u in unknown
               if u.startswith("--config.")]
  rest = [u for u in unknown if not u.startswith("--config.")]
  if rest or (overrides and args.command != "distill"):
    hint = ("; config values are set as --config.KEY=VALUE, e.g. "
            "--config.train.steps=100" if args.command == "distill" else "")
    parser.error(f"unrecognized arguments: {' '.join(rest or unknown)}{hint}")
  if overrides:
    args.config_overrides = overrides
  logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                      format="%(asctime)s %(levelname)s %(name)s: %(message)s")
  # JAX logs its failed TPU probe at INFO on every CPU machine.
  logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
  # orbax logs every checkpoint file operation at INFO.
  logging.getLogger("absl").setLevel(logging.WARNING)
  if not getattr(args, "fn", None):
    parser.print_help()
    return 2
  # A fresh process (the console script) gets the cache; one that imported
  # jax already (a notebook, the tests calling main()) keeps its own config.
  if (args.command in _CACHED_COMMANDS and not args.no_cache
      and "jax" not in sys.modules):
    enable_compilation_cache()
  try:
    return args.fn(args)
  except (ValueError, TypeError, FileNotFoundError) as e:
    # Caller mistakes: one clear line, no traceback from deep inside JAX.
    if args.verbose:
      raise
    print(f"mrt-distill {args.command}: error: {e}", file=sys.stderr)
    return 1


if __name__ == "__main__":
  sys.exit(main())
