"""Cloud TPU VM lifecycle for distillation runs, as gcloud commands.

  python tools/tpu/tpu.py types
  python tools/tpu/tpu.py create mrt-large --type v6e-64 --spot
  python tools/tpu/tpu.py install mrt-large --type v6e-64 \
      --wheel dist/mrt_distill-0.1.0-py3-none-any.whl
  python tools/tpu/tpu.py mount mrt-large --type v6e-64 --bucket BUCKET
  python tools/tpu/tpu.py distill mrt-large --type v6e-64 \
      --config configs/mrt_large_v6e.py --workdir /mnt/mrt/runs/large \
      --config.magenta_rt.teacher=/mnt/mrt/teachers/large
  python tools/tpu/tpu.py logs mrt-large --type v6e-64
  python tools/tpu/tpu.py run mrt-large --type v6e-64 -- \
      "$HOME/mrt_venv/bin/python -c 'import jax; print(jax.device_count())'"
  python tools/tpu/tpu.py stop mrt-large --type v6e-64
  python tools/tpu/tpu.py copy-ckpt gs://BUCKET/runs/large/checkpoints \
      runs/large/checkpoints
  python tools/tpu/tpu.py delete mrt-large --type v6e-64

Why a wrapper: a multi-host slice runs the same program on every worker,
so every step (install, launch, stop) is one `gcloud ... ssh --worker=all`
line whose flags must agree (zone, runtime version, accelerator type), and a
typo costs a slice start. This tool writes those lines from one catalogue.
`--dry-run` prints them, exactly and one per line, and runs nothing: the
tests check them for every supported type without a network.

Python on the workers: jax 0.7+ needs Python >= 3.11 and the TPU VM images
named below are, as far as we know, Ubuntu 22.04 (Python 3.10; its universe
has python3.11), so `install` apt-installs python3.11 (`--python` picks
another, e.g. python3.12 on a 24.04 image) and a venv at $HOME/mrt_venv.

Shared workdir: a multi-host run's checkpoints are written collectively
into one folder every host sees, and the host loop writes the workdir with
plain file calls (no gs:// paths), so `mount` gcsfuse-mounts a bucket at
/mnt/mrt on every worker and runs use --workdir /mnt/mrt/runs/NAME.

Runtime versions (the TPU VM image; `gcloud compute tpus tpu-vm versions
list --zone=Z` is the authority):
  v5e  v2-alpha-tpuv5-lite  (the version Cloud TPU's v5e JAX guides use;
                             Google's Python samples also show
                             "v2-tpuv5-litepod": uncertain which is
                             preferred today, both are JAX-ready images)
  v6e  v2-alpha-tpuv6e      (Trillium JAX guides)
Override with --runtime-version when `versions list` says otherwise.

Zones (Cloud TPU "regions and zones" page, as read in 2025; availability
changes, the first is the default and any zone is accepted with a warning):
  v5e  us-west4-a, us-central1-a, us-south1-a, us-west1-c, europe-west4-b
  v6e  us-east5-b, us-east1-d, us-east5-a, us-central1-b, europe-west4-a,
       asia-northeast1-b

Workers: slices of up to 8 chips are one host; larger v5e/v6e slices have 4
chips per host (v6e-64: 16 workers). `--worker=all` reaches all of them.
"""

from __future__ import annotations

import argparse
import pathlib
import shlex
import subprocess
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from mrt_distill import plan  # noqa: E402  (stdlib-only at import)

RUNTIME_VERSION = {"v5e": "v2-alpha-tpuv5-lite", "v6e": "v2-alpha-tpuv6e"}
ZONES = {
    "v5e": ("us-west4-a", "us-central1-a", "us-south1-a", "us-west1-c",
            "europe-west4-b"),
    "v6e": ("us-east5-b", "us-east1-d", "us-east5-a", "us-central1-b",
            "europe-west4-a", "asia-northeast1-b"),
}
# Where a launched run writes its log on each worker (the `logs` target).
LOG_PATH = "$HOME/mrt_distill.log"
# The venv `install` makes on every worker, and its entry point.
VENV = "$HOME/mrt_venv"
ENTRY = f"{VENV}/bin/mrt-distill"
REMOTE_DIR = "/tmp/mrt_distill_install"
# Extras `install --extras` accepts (setup.py).
EXTRAS = ("tpu", "interop", "gpu")
# Where `mount` puts the bucket on every worker (an absolute path, so it can
# be passed quoted, as --workdir, without relying on shell expansion).
MOUNT = "/mnt/mrt"


class ToolError(ValueError):
  """A bad combination of arguments (the message says what to pass)."""


def gcloud(*args: str, project: str | None = None) -> list[str]:
  cmd = ["gcloud", *args]
  if project:
    cmd.append(f"--project={project}")
  return cmd


def resolve(args) -> tuple[plan.Accelerator | None, str]:
  """(accelerator or None, zone) from --type / --zone."""
  acc = plan.accelerator(args.type) if getattr(args, "type", None) else None
  zone = getattr(args, "zone", None)
  if zone is None:
    if acc is None:
      raise ToolError(f"{args.cmd}: pass --zone, or --type to use that "
                      f"type's default zone")
    zone = ZONES[acc.generation][0]
  elif acc is not None and zone not in ZONES[acc.generation]:
    print(f"warning: {zone} is not among the zones known to offer "
          f"{acc.name} ({', '.join(ZONES[acc.generation])}); continuing",
          file=sys.stderr)
  return acc, zone


def ssh(name: str, zone: str, command: str, worker: str = "all",
        project: str | None = None) -> list[str]:
  return gcloud("compute", "tpus", "tpu-vm", "ssh", name, f"--zone={zone}",
                f"--worker={worker}", f"--command={command}", project=project)


# ---- subcommands: each returns the commands, in order ------------------------
def cmd_create(args) -> list[list[str]]:
  acc, zone = resolve(args)
  if acc is None:
    raise ToolError("create: --type is required (e.g. --type v5litepod-16)")
  runtime = args.runtime_version or RUNTIME_VERSION[acc.generation]
  tier = ["--spot"] if args.spot else ["--reserved"] if args.reserved else []
  if args.queued:
    # Queued resources: the request waits for capacity instead of failing.
    return [gcloud("compute", "tpus", "queued-resources", "create", args.name,
                   f"--node-id={args.name}", f"--zone={zone}",
                   f"--accelerator-type={acc.name}",
                   f"--runtime-version={runtime}", *tier,
                   project=args.project)]
  return [gcloud("compute", "tpus", "tpu-vm", "create", args.name,
                 f"--zone={zone}", f"--accelerator-type={acc.name}",
                 f"--version={runtime}", *tier, project=args.project)]


def cmd_install(args) -> list[list[str]]:
  """Copies a wheel (and the constraints) to every worker, pip-installs it
  with its extras: [tpu] (jax[tpu] and its matching libtpu), plus [interop]
  for the real Magenta RT assets (TensorFlow, tf2jax, SentencePiece)."""
  _, zone = resolve(args)
  if bool(args.wheel) == bool(args.pip):
    raise ToolError("install: pass exactly one of --wheel PATH (built with "
                    "`python -m pip wheel --no-deps -w dist .`) or --pip SPEC")
  py = args.python
  setup = (f"sudo apt-get -qq update && sudo DEBIAN_FRONTEND=noninteractive "
           f"apt-get -qq install -y {py} {py}-venv && {py} -m venv {VENV} && "
           f"{VENV}/bin/pip install -q -U pip")
  cmds = []
  if args.wheel:
    wheel = pathlib.Path(args.wheel)
    if not wheel.name.endswith(".whl"):
      raise ToolError(f"install: --wheel {wheel} is not a .whl file")
    files = [str(wheel)]
    if args.constraints:
      files.append(str(args.constraints))
    cmds.append(gcloud(
        "compute", "tpus", "tpu-vm", "ssh", args.name, f"--zone={zone}",
        "--worker=all", f"--command=mkdir -p {REMOTE_DIR}",
        project=args.project))
    cmds.append(gcloud("compute", "tpus", "tpu-vm", "scp", *files,
                       f"{args.name}:{REMOTE_DIR}/", f"--zone={zone}",
                       "--worker=all", project=args.project))
    extras = [e.strip() for e in args.extras.split(",") if e.strip()]
    bad = sorted(set(extras) - set(EXTRAS))
    if bad:
      raise ToolError(f"install: unknown extra(s) {bad}: use a comma list "
                      f"of {', '.join(EXTRAS)}")
    spec = f'"{REMOTE_DIR}/{wheel.name}[{",".join(extras)}]"'
  else:
    if '"' in args.pip:
      raise ToolError("install: --pip SPEC must not contain double quotes")
    spec = f'"{args.pip}"'
  cons = (f" -c {REMOTE_DIR}/{pathlib.Path(args.constraints).name}"
          if args.constraints and args.wheel else "")
  check = ('"import jax, mrt_distill; '
           'print(jax.__version__, mrt_distill.__version__)"')
  cmds.append(ssh(args.name, zone,
                  f"{setup} && {VENV}/bin/pip install{cons} {spec} && "
                  f"{VENV}/bin/python -c {check}", project=args.project))
  return cmds


def cmd_run(args) -> list[list[str]]:
  _, zone = resolve(args)
  command = list(args.command)
  if not command:
    raise ToolError("run: give the command after --, e.g. "
                    "run NAME --zone Z -- python3 -c 'import jax'")
  text = command[0] if len(command) == 1 else shlex.join(command)
  return [ssh(args.name, zone, text, worker=args.worker, project=args.project)]


def cmd_distill(args) -> list[list[str]]:
  """Starts `mrt-distill distill` on every worker, detached (setsid nohup),
  logging to LOG_PATH; a rerun resumes from the workdir's checkpoints."""
  _, zone = resolve(args)
  argv = ["distill", "--config", args.config, "--workdir", args.workdir,
          *args.overrides]
  line = (f"setsid nohup {ENTRY} {shlex.join(argv)} > {LOG_PATH} 2>&1 "
          f"< /dev/null &")
  return [ssh(args.name, zone, line, project=args.project)]


def cmd_mount(args) -> list[list[str]]:
  """gcsfuse-mounts a bucket at the same path on every worker: the run's
  workdir must be one folder all hosts share (orbax checkpoints are written
  collectively), and the host loop writes it with plain file calls."""
  _, zone = resolve(args)
  if args.bucket.startswith("gs://") or "/" in args.bucket.strip("/"):
    raise ToolError(f"mount: --bucket takes a bucket name (e.g. my-bucket), "
                    f"got {args.bucket!r}")
  repo = ('echo "deb [signed-by=/usr/share/keyrings/cloud.google.asc] '
          'https://packages.cloud.google.com/apt gcsfuse-$(lsb_release -c -s) '
          'main" | sudo tee /etc/apt/sources.list.d/gcsfuse.list > /dev/null')
  key = ("curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | "
         "sudo tee /usr/share/keyrings/cloud.google.asc > /dev/null")
  line = (f"{repo} && {key} && sudo apt-get -qq update && "
          f"sudo apt-get -qq install -y gcsfuse && sudo mkdir -p {args.at} && "
          f"sudo chown $USER {args.at} && "
          f"(mountpoint -q {args.at} || gcsfuse --implicit-dirs "
          f"{args.bucket.strip('/')} {args.at})")
  return [ssh(args.name, zone, line, project=args.project)]


def cmd_stop(args) -> list[list[str]]:
  """SIGTERM: the host loop checkpoints at the next step and exits."""
  _, zone = resolve(args)
  # [m]: the pattern must not match the remote shell running this line.
  return [ssh(args.name, zone, 'pkill -TERM -f "[m]rt-distill distill" || true',
              project=args.project)]


def cmd_logs(args) -> list[list[str]]:
  _, zone = resolve(args)
  follow = "-F " if args.follow else ""
  return [ssh(args.name, zone, f"tail -n {args.lines} {follow}{LOG_PATH}",
              worker=args.worker, project=args.project)]


def cmd_copy_ckpt(args) -> list[list[str]]:
  """gcloud storage rsync (incremental, recursive) from SRC to DST: GCS <->
  local here, or, with --on NAME, paths on a worker (a worker-local workdir
  to GCS)."""
  sync = ["gcloud", "storage", "rsync", "--recursive", args.src, args.dst]
  if args.on:
    _, zone = resolve(args)
    return [ssh(args.on, zone, shlex.join(sync), worker=args.worker,
                project=args.project)]
  return [sync + ([f"--project={args.project}"] if args.project else [])]


def cmd_delete(args) -> list[list[str]]:
  _, zone = resolve(args)
  if args.queued:
    return [gcloud("compute", "tpus", "queued-resources", "delete", args.name,
                   f"--zone={zone}", "--force", "--quiet",
                   project=args.project)]
  return [gcloud("compute", "tpus", "tpu-vm", "delete", args.name,
                 f"--zone={zone}", "--quiet", project=args.project)]


def types_table() -> str:
  rows = [f"{'type':<15} {'chips':>5} {'hosts':>5} {'topology':>8} "
          f"{'HBM/chip':>8}  runtime version        zones (first = default)"]
  for name in plan.supported_accelerators():
    a = plan.accelerator(name)
    rows.append(f"{a.name:<15} {a.chips:>5} {a.hosts:>5} {a.topology:>8} "
                f"{plan.HBM_GIB[a.generation]:>5} GiB  "
                f"{RUNTIME_VERSION[a.generation]:<22} "
                f"{', '.join(ZONES[a.generation])}")
  return "\n".join(rows)


# ---- CLI ---------------------------------------------------------------------
def _common(suppress: bool) -> argparse.ArgumentParser:
  """--dry-run / --project, accepted before or after the subcommand."""
  c = argparse.ArgumentParser(add_help=False)
  kw = {"default": argparse.SUPPRESS} if suppress else {}
  c.add_argument("--dry-run", action="store_true", help="print the gcloud "
                 "commands, one per line; run nothing", **kw)
  c.add_argument("--project", help="GCP project (default: gcloud's)", **kw)
  return c


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog="tools/tpu/tpu.py", description=__doc__.splitlines()[0],
      formatter_class=argparse.RawDescriptionHelpFormatter,
      parents=[_common(False)])
  sub = p.add_subparsers(dest="cmd", required=True)
  common = _common(True)

  def add(name, fn, help_, *, tpu=True, zone_opts=True):
    s = sub.add_parser(name, help=help_, parents=[common])
    s.set_defaults(fn=fn)
    if tpu:
      s.add_argument("name", help="TPU (node) name")
    if zone_opts:
      s.add_argument("--type", help="accelerator type, e.g. v5litepod-16, "
                     "v6e-64 (its default zone applies without --zone)")
      s.add_argument("--zone")
    return s

  s = add("create", cmd_create, "create a TPU VM slice")
  tier = s.add_mutually_exclusive_group()
  tier.add_argument("--spot", action="store_true", help="spot capacity "
                    "(preemptible; the run resumes from checkpoints)")
  tier.add_argument("--reserved", action="store_true",
                    help="the project's reservation")
  s.add_argument("--runtime-version", help="override the catalogue's image")
  s.add_argument("--queued", action="store_true",
                 help="a queued resource (waits for capacity)")
  s = add("install", cmd_install, "pip install mrt_distill[tpu] on all "
          "workers")
  s.add_argument("--wheel", help="a locally built mrt_distill wheel")
  s.add_argument("--pip", help="a pip requirement instead, e.g. "
                 "'mrt_distill[tpu] @ git+https://...'")
  s.add_argument("--extras", default="tpu",
                 help="extras of the wheel, comma separated (tpu,interop "
                 "for the real Magenta RT assets)")
  s.add_argument("--constraints", default="constraints.txt",
                 help="pins installed with the wheel ('' for none)")
  s.add_argument("--python", default="python3.11",
                 help="the apt Python for the venv (>= 3.11 for jax)")
  s = add("run", cmd_run, "run one command on the workers: run NAME "
          "[--worker W] -- COMMAND...")
  s.add_argument("--worker", default="all")
  s = add("distill", cmd_distill, "start mrt-distill distill on all workers")
  s.add_argument("--config", required=True)
  s.add_argument("--workdir", required=True,
                 help=f"one folder all hosts share, e.g. {MOUNT}/runs/x "
                 f"(see mount)")
  s = add("mount", cmd_mount, "gcsfuse-mount a bucket on all workers (the "
          "shared workdir)")
  s.add_argument("--bucket", required=True, help="bucket name, no gs://")
  s.add_argument("--at", default=MOUNT, help=f"mount point (default {MOUNT})")
  add("stop", cmd_stop, "SIGTERM the run on all workers (it checkpoints)")
  s = add("logs", cmd_logs, "stream a worker's run log")
  s.add_argument("--worker", default="0", help="0, 1-3, or all")
  s.add_argument("--lines", type=int, default=100)
  s.add_argument("--no-follow", dest="follow", action="store_false")
  s = add("copy-ckpt", cmd_copy_ckpt, "rsync checkpoints (gcloud storage)",
          tpu=False)
  s.add_argument("src")
  s.add_argument("dst")
  s.add_argument("--on", help="run the copy on this TPU's worker")
  s.add_argument("--worker", default="0")
  s = add("delete", cmd_delete, "delete the slice")
  s.add_argument("--queued", action="store_true",
                 help="it was created with create --queued")
  sub.add_parser("types", help="supported accelerator types",
                 parents=[common]).set_defaults(fn=None)
  return p


def parse(argv):
  p = build_parser()
  argv = list(argv)
  # `run ... -- COMMAND`: everything after the first -- is the command.
  command = []
  if "--" in argv:
    i = argv.index("--")
    argv, command = argv[:i], argv[i + 1:]
  # `distill` passes --config.KEY=VALUE overrides through to mrt-distill.
  args, unknown = p.parse_known_args(argv)
  if command and args.cmd != "run":
    p.error(f"only `run` takes a command after --, not {args.cmd}")
  args.command = command
  overrides = [u for u in unknown if u.startswith("--config.")]
  rest = [u for u in unknown if not u.startswith("--config.")]
  if rest or (overrides and args.cmd != "distill"):
    p.error(f"unrecognized arguments: {' '.join(rest or overrides)}")
  args.overrides = overrides
  return args


def main(argv=None) -> int:
  try:
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.cmd == "types":
      print(types_table())
      return 0
    cmds = args.fn(args)
  except (ToolError, plan.UnknownAcceleratorError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  for cmd in cmds:
    line = shlex.join(cmd)
    if args.dry_run:
      print(line)
      continue
    print(f"+ {line}", flush=True)
    rc = subprocess.run(cmd, check=False).returncode
    if rc:
      print(f"error: exit status {rc} from: {line}", file=sys.stderr)
      return rc
  return 0


if __name__ == "__main__":
  sys.exit(main())
