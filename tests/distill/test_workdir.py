"""A distill workdir is new, empty or a run of this program; one run at a
time holds it; a refused start leaves nothing behind (distill/workdir.py)."""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import pytest

from mrt_distill import main as cli_main
from mrt_distill.distill import workdir as W

TINY = ["distill", "--config", "reference_cpu:tiny"]


def _tree(root: pathlib.Path) -> dict[str, bytes | None]:
  return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
          for p in sorted(root.rglob("*"))}


def test_kinds(tmp_path):
  assert W.kind(tmp_path / "nope") == "new"
  (tmp_path / "e").mkdir()
  assert W.kind(tmp_path / "e") == "empty"
  (tmp_path / "legacy" / "checkpoints").mkdir(parents=True)
  assert W.kind(tmp_path / "legacy") == "legacy-run"
  (tmp_path / "run").mkdir()
  (tmp_path / "run" / W.MARKER).write_text("{}")
  (tmp_path / "run" / "config.json").write_text("{}")
  assert W.kind(tmp_path / "run") == "run"
  # A folder holding only a stale lock note (a start killed early) is empty.
  (tmp_path / "e" / W.LOCK_FILE).write_text("{}")
  assert W.kind(tmp_path / "e") == "empty"
  (tmp_path / "mine").mkdir()
  (tmp_path / "mine" / "config.json").write_text("my settings")
  with pytest.raises(W.WorkdirError, match=r"holds files that are not a "
                     r"mrt-distill run \(config.json; no \.mrt-distill-run"):
    W.kind(tmp_path / "mine")
  (tmp_path / "f.txt").write_text("x")
  with pytest.raises(W.WorkdirError, match="is a file; give a folder"):
    W.kind(tmp_path / "f.txt")


def test_distill_refuses_a_folder_of_user_files_and_changes_nothing(
    tmp_path, monkeypatch, capsys):
  monkeypatch.chdir(tmp_path)
  (tmp_path / "mine").mkdir()
  (tmp_path / "mine" / "config.json").write_text("my settings")
  (tmp_path / "mine" / "student.npz").write_bytes(b"my weights")
  before = _tree(tmp_path)
  assert cli_main.main([*TINY, "--workdir", "mine"]) == 1
  err = capsys.readouterr().err
  assert "error: workdir 'mine' holds files that are not a mrt-distill run " \
         "(config.json, student.npz;" in err
  assert "--workdir 'mine/run'" in err
  assert _tree(tmp_path) == before


def test_a_refused_start_removes_the_folders_it_created(
    tmp_path, monkeypatch, capsys):
  """A refusal found after the claim (here the world name) leaves neither
  the new workdir nor its new parents behind."""
  monkeypatch.chdir(tmp_path)
  rc = cli_main.main([*TINY, "--workdir", "runs/a/b",
                      "--config.world=refrence"])
  assert rc == 1
  assert "world 'refrence' is not supported" in capsys.readouterr().err
  assert list(tmp_path.iterdir()) == []
  # An existing empty workdir stays, empty (the lock note is gone).
  (tmp_path / "e").mkdir()
  assert cli_main.main([*TINY, "--workdir", "e",
                        "--config.world=refrence"]) == 1
  assert list((tmp_path / "e").iterdir()) == []


def test_claim_marks_locks_and_releases(tmp_path):
  w = tmp_path / "w"
  with W.claim(w) as c:
    note = json.loads((w / W.LOCK_FILE).read_text())
    assert note["pid"] == os.getpid()
    assert note["host"] == socket.gethostname()
    assert not (w / W.MARKER).exists()  # nothing written yet
    c.start()
    assert json.loads((w / W.MARKER).read_text())["format"] == W.MARKER_FORMAT
    # A second claim (another open file description) is refused.
    with pytest.raises(W.WorkdirError, match=rf"is in use by PID "
                       rf"{os.getpid()} on host {socket.gethostname()}"):
      with W.claim(w):
        pass
    assert (w / W.LOCK_FILE).exists()  # the refusal left the holder's note
  assert sorted(p.name for p in w.iterdir()) == [W.MARKER]
  assert W.kind(w) == "run"


def test_a_stale_lock_of_a_dead_process_is_taken_over_with_a_warning(
    tmp_path, caplog):
  w = tmp_path / "w"
  w.mkdir()
  (w / W.MARKER).write_text("{}")
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                        capture_output=True, text=True, check=True)
  pid = int(dead.stdout)
  (w / W.LOCK_FILE).write_text(json.dumps(
      {"pid": pid, "host": socket.gethostname(), "started": "earlier"}))
  with caplog.at_level("WARNING", logger="mrt_distill.distill"):
    with W.claim(w):
      assert json.loads((w / W.LOCK_FILE).read_text())["pid"] == os.getpid()
  assert f"taking over the stale lock of PID {pid} on host " \
         f"{socket.gethostname()}, started earlier" in caplog.text
  # Another machine's note cannot be checked from here: refused, kept.
  (w / W.LOCK_FILE).write_text(json.dumps({"pid": 7, "host": "tpu-vm-3"}))
  with pytest.raises(W.WorkdirError, match=r"locked by PID 7 on host "
                     r"tpu-vm-3, another machine.*delete .*\.mrt-distill-lock"):
    with W.claim(w):
      pass
  assert json.loads((w / W.LOCK_FILE).read_text())["host"] == "tpu-vm-3"


_HOLDER = """
import sys, time
from mrt_distill.distill import workdir as W
with W.claim(sys.argv[1]) as c:
  c.start()
  print("held", flush=True)
  sys.stdin.readline()
"""


def test_two_processes_on_one_workdir(tmp_path):
  """Process A holds the workdir (as a running distill does); `mrt-distill
  distill` in process B is refused naming A's PID and host and writes
  nothing; once A ends, B's run may start (shown by the claim)."""
  w = tmp_path / "w"
  a = subprocess.Popen([sys.executable, "-c", _HOLDER, str(w)],
                       stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                       text=True)
  try:
    assert a.stdout.readline().strip() == "held"
    before = _tree(tmp_path)
    b = subprocess.run(
        [sys.executable, "-m", "mrt_distill.main", *TINY, "--workdir",
         str(w)], capture_output=True, text=True, timeout=300,
        cwd=tmp_path)
    assert b.returncode == 1, b.stderr
    assert "Traceback" not in b.stderr
    assert (f"mrt-distill distill: error: workdir {str(w)!r} is in use by "
            f"PID {a.pid} on host {socket.gethostname()}") in b.stderr
    assert "give another --workdir" in b.stderr
    assert _tree(tmp_path) == before
  finally:
    a.stdin.close()
    a.wait(timeout=60)
  assert a.returncode == 0
  assert not (w / W.LOCK_FILE).exists()
  with W.claim(w):  # free again
    pass


def test_a_killed_holder_leaves_a_lock_the_next_run_takes_over(tmp_path):
  w = tmp_path / "w"
  a = subprocess.Popen([sys.executable, "-c", _HOLDER, str(w)],
                       stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                       text=True)
  assert a.stdout.readline().strip() == "held"
  a.kill()
  a.wait(timeout=60)
  assert json.loads((w / W.LOCK_FILE).read_text())["pid"] == a.pid
  with W.claim(w) as c:  # the kernel dropped A's flock
    assert c.kind == "run"


# slow: two real distill processes (about 32 s on 2 cores); .ci/run runs
# it with the other slow checks.
@pytest.mark.slow
def test_two_real_distill_runs_on_one_workdir(tmp_path):
  """(About 10 s.) A real `distill` holds its workdir for the whole command (training,
  export): a second one started meanwhile is refused naming it, and the
  first run's metrics hold each of its steps once."""
  w = tmp_path / "w"
  args = [sys.executable, "-m", "mrt_distill.main", *TINY, "--workdir",
          str(w), "--no-report", "--config.train.steps=40",
          "--config.train.log_every=1", "--config.train.eval_every=1000",
          "--config.train.checkpoint_every=20"]
  a = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True, cwd=tmp_path)
  try:
    deadline = time.time() + 600
    while not (w / W.LOCK_FILE).exists():
      assert a.poll() is None and time.time() < deadline, a.stderr.read()
      time.sleep(0.2)
    b = subprocess.run(args, capture_output=True, text=True, timeout=600,
                       cwd=tmp_path)
    assert b.returncode == 1, b.stderr
    assert (f"is in use by PID {a.pid} on host {socket.gethostname()}"
            in b.stderr)
    _, err = a.communicate(timeout=900)
  finally:
    if a.poll() is None:
      a.kill()
  assert a.returncode == 0, err[-2000:]
  rows = [json.loads(l) for l in
          (w / "metrics.jsonl").read_text().splitlines()]
  train = [r["step"] for r in rows if "loss/total" in r]
  assert train == list(range(1, 41))  # one run's rows, each step once
  assert [r["step"] for r in rows if "loss/total" not in r] == [40]  # eval
  assert (w / "student.npz").is_file() and not (w / W.LOCK_FILE).exists()
  assert W.kind(w) == "run"
