"""tools/tpu/tpu.py --dry-run: the exact gcloud lines for every supported
slice type, and clear errors for bad input. No network: nothing runs."""

from __future__ import annotations

import importlib.util
import pathlib
import shlex

import pytest

from mrt_distill import plan

_PATH = pathlib.Path(__file__).resolve().parents[1] / "tools" / "tpu" / "tpu.py"
_spec = importlib.util.spec_from_file_location("tpu_tool", _PATH)
tpu = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tpu)

ALL_TYPES = plan.supported_accelerators()
WHEEL = "dist/mrt_distill-0.1.0-py3-none-any.whl"


def dry(capsys, *argv) -> list[list[str]]:
  """Runs the tool with --dry-run -> the printed commands as argv lists."""
  assert tpu.main(["--dry-run", *argv]) == 0
  out = capsys.readouterr().out.splitlines()
  return [shlex.split(line) for line in out]


def test_catalogue_covers_v5e_and_v6e_slices():
  assert "v5litepod-16" in ALL_TYPES and "v5litepod-64" in ALL_TYPES
  assert "v6e-64" in ALL_TYPES and "v6e-256" in ALL_TYPES
  assert len(ALL_TYPES) == 16
  assert plan.accelerator("v6e-64").hosts == 16
  assert plan.accelerator("v5e-16").name == "v5litepod-16"
  assert plan.accelerator("v5litepod-8").hosts == 1


@pytest.mark.parametrize("acc_type", ALL_TYPES)
def test_create_line_for_every_type(capsys, acc_type):
  a = plan.accelerator(acc_type)
  runtime = {"v5e": "v2-alpha-tpuv5-lite", "v6e": "v2-alpha-tpuv6e"}
  zone = {"v5e": "us-west4-a", "v6e": "us-east5-b"}[a.generation]
  assert dry(capsys, "create", "mrt", "--type", acc_type, "--spot") == [[
      "gcloud", "compute", "tpus", "tpu-vm", "create", "mrt",
      f"--zone={zone}", f"--accelerator-type={acc_type}",
      f"--version={runtime[a.generation]}", "--spot"]]
  assert dry(capsys, "create", "mrt", "--type", acc_type, "--reserved",
             "--queued", "--zone", "europe-west4-a") == [[
      "gcloud", "compute", "tpus", "queued-resources", "create", "mrt",
      "--node-id=mrt", "--zone=europe-west4-a",
      f"--accelerator-type={acc_type}",
      f"--runtime-version={runtime[a.generation]}", "--reserved"]]


@pytest.mark.parametrize("acc_type", ALL_TYPES)
def test_lifecycle_lines_for_every_type(capsys, acc_type):
  a = plan.accelerator(acc_type)
  zone = tpu.ZONES[a.generation][0]
  ssh = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "mrt", f"--zone={zone}"]

  install = dry(capsys, "install", "mrt", "--type", acc_type, "--wheel", WHEEL)
  assert install[0] == ssh + ["--worker=all",
                              "--command=mkdir -p /tmp/mrt_distill_install"]
  assert install[1] == [
      "gcloud", "compute", "tpus", "tpu-vm", "scp", WHEEL, "constraints.txt",
      "mrt:/tmp/mrt_distill_install/", f"--zone={zone}", "--worker=all"]
  assert install[2][:-1] == ssh + ["--worker=all"]
  remote = install[2][-1]
  assert remote.startswith("--command=sudo apt-get")
  assert ('$HOME/mrt_venv/bin/pip install -c /tmp/mrt_distill_install/'
          'constraints.txt "/tmp/mrt_distill_install/mrt_distill-0.1.0-py3-'
          'none-any.whl[tpu]"') in remote

  assert dry(capsys, "run", "mrt", "--type", acc_type, "--", "hostname") == [
      ssh + ["--worker=all", "--command=hostname"]]
  launch = dry(capsys, "distill", "mrt", "--type", acc_type, "--config",
               "configs/mrt_large_v6e.py", "--workdir", "/mnt/mrt/runs/l",
               "--config.train.steps=10")
  assert launch == [ssh + ["--worker=all", (
      "--command=setsid nohup $HOME/mrt_venv/bin/mrt-distill distill "
      "--config configs/mrt_large_v6e.py --workdir /mnt/mrt/runs/l "
      "--config.train.steps=10 > $HOME/mrt_distill.log 2>&1 < /dev/null &")]]
  mount = dry(capsys, "mount", "mrt", "--type", acc_type, "--bucket", "bkt")
  assert mount[0][:-1] == ssh + ["--worker=all"]
  assert mount[0][-1].endswith(
      "(mountpoint -q /mnt/mrt || gcsfuse --implicit-dirs bkt /mnt/mrt)")
  assert dry(capsys, "logs", "mrt", "--type", acc_type) == [
      ssh + ["--worker=0", "--command=tail -n 100 -F $HOME/mrt_distill.log"]]
  assert dry(capsys, "stop", "mrt", "--type", acc_type) == [ssh + [
      "--worker=all",
      '--command=pkill -TERM -f "[m]rt-distill distill" || true']]
  assert dry(capsys, "delete", "mrt", "--type", acc_type) == [[
      "gcloud", "compute", "tpus", "tpu-vm", "delete", "mrt",
      f"--zone={zone}", "--quiet"]]
  assert dry(capsys, "delete", "mrt", "--type", acc_type, "--queued") == [[
      "gcloud", "compute", "tpus", "queued-resources", "delete", "mrt",
      f"--zone={zone}", "--force", "--quiet"]]


def test_printed_lines_are_exact_text(capsys):
  """The printed text itself (what a user pastes), not only its parse."""
  assert tpu.main(["--dry-run", "--project", "proj", "create", "big",
                   "--type", "v6e-256", "--spot"]) == 0
  assert capsys.readouterr().out == (
      "gcloud compute tpus tpu-vm create big --zone=us-east5-b "
      "--accelerator-type=v6e-256 --version=v2-alpha-tpuv6e --spot "
      "--project=proj\n")
  assert tpu.main(["logs", "big", "--zone", "us-east1-d", "--worker", "all",
                   "--no-follow", "--lines", "20", "--dry-run"]) == 0
  assert capsys.readouterr().out == (
      "gcloud compute tpus tpu-vm ssh big --zone=us-east1-d --worker=all "
      "'--command=tail -n 20 $HOME/mrt_distill.log'\n")


def test_copy_checkpoints(capsys):
  assert dry(capsys, "copy-ckpt", "gs://b/runs/l/checkpoints",
             "runs/l/checkpoints") == [[
      "gcloud", "storage", "rsync", "--recursive",
      "gs://b/runs/l/checkpoints", "runs/l/checkpoints"]]
  # From a worker's local disk to GCS: the rsync runs on worker 0.
  assert dry(capsys, "copy-ckpt", "runs/l", "gs://b/runs/l", "--on", "mrt",
             "--type", "v5litepod-64") == [[
      "gcloud", "compute", "tpus", "tpu-vm", "ssh", "mrt",
      "--zone=us-west4-a", "--worker=0",
      "--command=gcloud storage rsync --recursive runs/l gs://b/runs/l"]]


def test_install_from_a_pip_spec(capsys):
  out = dry(capsys, "install", "mrt", "--zone", "us-east1-d", "--pip",
            "mrt_distill[tpu] @ git+https://example.org/mrt_distill")
  assert len(out) == 1
  assert ('$HOME/mrt_venv/bin/pip install "mrt_distill[tpu] @ '
          'git+https://example.org/mrt_distill"') in out[0][-1]


def test_install_extras_for_real_assets(capsys):
  out = dry(capsys, "install", "mrt", "--type", "v5litepod-16", "--wheel",
            "dist/mrt_distill-0.1.0-py3-none-any.whl", "--extras",
            "tpu,interop")
  assert ('install -c /tmp/mrt_distill_install/constraints.txt '
          '"/tmp/mrt_distill_install/mrt_distill-0.1.0-py3-none-any.whl'
          '[tpu,interop]"') in out[-1][-1]
  assert tpu.main(["--dry-run", "install", "mrt", "--type", "v5litepod-16",
                   "--wheel", "x.whl", "--extras", "tpu,tf"]) == 2
  assert "unknown extra(s) ['tf']" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["v7-8", "v5litepod-12", "v6e", "v4-32",
                                 "tpu-v6e-64"])
def test_unknown_type_is_a_clear_error(capsys, bad):
  assert tpu.main(["--dry-run", "create", "mrt", "--type", bad]) == 2
  err = capsys.readouterr().err
  assert f"unknown TPU accelerator type {bad!r}" in err
  assert "v5litepod-16" in err and "v6e-256" in err  # the supported list


def test_argument_errors(capsys):
  assert tpu.main(["--dry-run", "logs", "mrt"]) == 2
  assert "pass --zone, or --type" in capsys.readouterr().err
  assert tpu.main(["--dry-run", "create", "mrt", "--zone", "us-west4-a"]) == 2
  assert "--type is required" in capsys.readouterr().err
  assert tpu.main(["--dry-run", "install", "mrt", "--type", "v6e-8"]) == 2
  assert "exactly one of --wheel" in capsys.readouterr().err
  assert tpu.main(["--dry-run", "run", "mrt", "--type", "v6e-8"]) == 2
  assert "give the command after --" in capsys.readouterr().err
  assert tpu.main(["--dry-run", "mount", "mrt", "--type", "v6e-8",
                   "--bucket", "gs://bkt"]) == 2
  assert "takes a bucket name" in capsys.readouterr().err
  with pytest.raises(SystemExit):  # argparse: spot and reserved exclude
    tpu.main(["--dry-run", "create", "mrt", "--type", "v6e-8", "--spot",
              "--reserved"])
  capsys.readouterr()


def test_unlisted_zone_warns_but_proceeds(capsys):
  assert tpu.main(["--dry-run", "delete", "mrt", "--type", "v6e-64",
                   "--zone", "us-west4-a"]) == 0
  out = capsys.readouterr()
  assert "--zone=us-west4-a" in out.out
  assert "not among the zones known to offer v6e-64" in out.err


def test_types_table_lists_hosts_and_runtime(capsys):
  assert tpu.main(["types"]) == 0
  out = capsys.readouterr().out
  line = [l for l in out.splitlines() if l.startswith("v6e-256 ")][0]
  assert line.split()[:4] == ["v6e-256", "256", "64", "16x16"]
  assert "v2-alpha-tpuv6e" in line and "32 GiB" in line
