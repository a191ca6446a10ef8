"""A home this process cannot write is still readable: ``sdstudio jobs``, ``jobs show`` and the home and review
dashboards read it, and a write is one line saying the home is read-only. Read-only is made real: a read-only
tmpfs remount when running as root (root ignores permissions), chmod otherwise, so the tests run either way."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sdstudio.cli import main
from sdstudio.store import Store
from tests.helpers import mount_tmpfs, privileged, unmount

ROOT = Path(__file__).resolve().parents[2]


def permissions_bind_us() -> bool:
    """Does a folder without write permission stop this process? Not for root (CAP_DAC_OVERRIDE), which then
    needs a read-only mount instead; yes for other users, and for root with that capability dropped."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        os.chmod(folder, 0o555)
        try:
            Path(folder, "probe").touch()
        except PermissionError:
            return True
        finally:
            os.chmod(folder, 0o755)
    return False


AS_ROOT = not permissions_bind_us()  # "root" here: permissions do not stop us, so read-only means a mount


class Freezable:
    """A folder this process can write now and not after ``freeze()``."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.frozen = False

    def freeze(self) -> None:
        if AS_ROOT:
            privileged("mount", "-o", "remount,ro", str(self.folder))
        else:
            for path in sorted(self.folder.rglob("*"), reverse=True) + [self.folder]:
                path.chmod(path.stat().st_mode & ~0o222)
        self.frozen = True

    def thaw(self) -> None:
        if self.frozen and not AS_ROOT:
            for path in [self.folder, *self.folder.rglob("*")]:
                path.chmod(path.stat().st_mode | 0o200)
        self.frozen = False


@pytest.fixture
def place(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    if AS_ROOT:
        mount_tmpfs(folder, "32m")
    freezable = Freezable(folder)
    try:
        yield freezable
    finally:
        freezable.thaw()
        if AS_ROOT:
            unmount(folder)


def model(server) -> list[str]:
    return ["--provider", "openai_compatible", "--model", "fake-model", "--base-url", server.url]


@pytest.fixture
def judged_home(place, openai_server):
    """A home with a generation job (4 ok rows) and its evaluation, then made read-only. Written by CLI processes:
    a file this process still held open for writing would make the read-only remount fail ("busy")."""
    home = place.folder / "home"
    for args in (["generate", "--topics", "Heaps", "Tries", "--per-topic", "2"], ["evaluate", "--job", "1"]):
        done = subprocess.run([sys.executable, "-m", "sdstudio.cli", *args, *model(openai_server), "--home", str(home),
                               "--json"], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    place.freeze()
    return home


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# -- reading ------------------------------------------------------------------------------------------------

def test_jobs_and_jobs_show_read_a_read_only_home(judged_home, capsys):
    before = sorted(os.listdir(judged_home))
    code, out, err = run(capsys, "jobs", "--home", str(judged_home), "--json")
    assert code == 0, err
    assert [(j["id"], j["kind"], j["status"], j["ok"]) for j in json.loads(out)] == [
        (2, "evaluation", "done", 4), (1, "generation", "done", 4)]
    code, out, err = run(capsys, "jobs", "show", "1", "--home", str(judged_home), "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["records"]["ok"] == 4 and shown["children"] == [2]  # its evaluation
    code, out, err = run(capsys, "jobs", "--kind", "generation", "--home", str(judged_home))
    assert code == 0 and "code_generation" in out, err
    assert sorted(os.listdir(judged_home)) == before  # nothing created beside the database (no -wal, no -shm)


def test_a_home_that_cannot_be_created_reads_as_empty(place, capsys):
    place.freeze()
    home = place.folder / "never-made"
    code, out, err = run(capsys, "jobs", "--home", str(home))
    assert (code, out, err.strip()) == (0, "", "no jobs yet")
    code, out, err = run(capsys, "jobs", "show", "1", "--home", str(home))
    assert code == 2 and err.strip().splitlines() == ["sdstudio: error: no job with id 1; `sdstudio jobs` lists them"]
    assert not home.exists()


def test_the_home_and_review_dashboards_read_a_read_only_home(judged_home):
    from sdstudio.ui.home import HomeApp
    from sdstudio.ui.review import ReviewPanel

    assert "code_generation" in HomeApp(home=judged_home).jobs.value
    panel = ReviewPanel(home=judged_home)
    assert panel.job.value == 2 and len(panel.frame) == 4 and len(panel.rows.children) == 1  # one card at a time
    panel.reviewer.value = "ana"
    record_id = int(panel.frame.iloc[0]["record_id"])
    assert panel.record(record_id, verdict="accept") is False  # a write: refused with the one line
    assert f"SDSTUDIO_HOME {judged_home} is read-only" in panel.status.value


# -- writing ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["existing", "never-made"])
def test_writing_to_a_read_only_home_is_one_line_naming_it(judged_home, openai_server, capsys, which):
    home = judged_home if which == "existing" else judged_home.parent / "never-made"
    sent = len(openai_server.requests)
    code, out, err = run(capsys, "generate", *model(openai_server), "--topics", "Graphs", "--home", str(home))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"sdstudio: error: SDSTUDIO_HOME {home} is read-only ("), lines[0]
    assert "point SDSTUDIO_HOME (or --home) at a folder you can write" in lines[0]
    assert len(openai_server.requests) == sent  # nothing paid for a job that could not be recorded


# -- SQLite's WAL files on a read-only home -------------------------------------------------------------------

KILLED_WRITER = """
import os, sys
from sdstudio.store import Store
store = Store.open(sys.argv[1])
store.create_job("generation", status="done", use_case="written-last")
os._exit(0)  # no close: the last transaction stays in metadata.db-wal, as after a SIGKILL
"""


def killed_writer(home: Path) -> None:
    subprocess.run([sys.executable, "-c", KILLED_WRITER, str(home)], cwd=ROOT, check=True, timeout=60)
    assert (home / "metadata.db-wal").stat().st_size > 0


def test_changes_left_in_the_wal_by_a_killed_writer_are_read_not_ignored(place, capsys):
    home = place.folder / "home"
    killed_writer(home)
    place.freeze()
    code, out, err = run(capsys, "jobs", "--home", str(home), "--json")
    assert code == 0, err
    assert [j["what"] for j in json.loads(out)] == ["sft:written-last"]


def test_a_wal_that_cannot_be_read_is_refused_not_read_stale(place, capsys):
    home = place.folder / "home"
    killed_writer(home)
    (home / "metadata.db-shm").unlink()  # now SQLite can read the WAL only by creating -shm, which it may not
    place.freeze()
    code, out, err = run(capsys, "jobs", "--home", str(home))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "metadata.db-wal holds changes not yet written" in lines[0], err


def test_an_immutable_reader_reads_through_the_wal_once_a_writer_appears(place, tmp_path):
    writable = place.folder / "home"
    Store.open(writable).create_job("generation", status="done")
    view = tmp_path / "view"
    view.mkdir()
    privileged("mount", "--bind", str(writable), str(view))
    try:
        privileged("mount", "-o", "remount,bind,ro", str(view))
        reader = Store.open(view)
        assert reader.read_only and len(reader.jobs()) == 1
        writer = Store.open(writable)
        writer.create_job("generation", status="done")  # a -wal appears: an immutable read would miss this row
        assert len(reader.jobs()) == 2
        writer.create_job("generation", status="done")
        assert len(reader.jobs()) == 3
        writer.close()
        reader.close()
    finally:
        unmount(view)


def test_a_metadata_db_without_write_permission_reads_and_refuses_writes(tmp_path, capsys, openai_server):
    """A metadata.db the user may read but not write. Root writes whatever the mode, so as root the commands run
    without root's capabilities (util-linux's setpriv): the permission check is the kernel's either way."""
    home = tmp_path / "home"
    Store.open(home).create_job("generation", status="done", use_case="mine")
    (home / "metadata.db").chmod(0o444)

    def sdstudio(*args: str) -> tuple[int, str, str]:
        if not AS_ROOT:
            return run(capsys, *args)
        done = subprocess.run(["setpriv", "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all", "--",
                               sys.executable, "-m", "sdstudio.cli", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=120)
        return done.returncode, done.stdout, done.stderr

    code, out, err = sdstudio("jobs", "--home", str(home), "--json")
    assert code == 0 and [j["what"] for j in json.loads(out)] == ["sft:mine"], err
    code, out, err = sdstudio("generate", *model(openai_server), "--topics", "Graphs", "--home", str(home))
    assert code == 2 and "is read-only (no write permission on metadata.db)" in err, err


# -- everything else that writes into a home: uploads, exports, the dashboards' server ------------------------

def test_an_export_from_a_read_only_home_writes_no_file_anywhere(judged_home, tmp_path, capsys):
    out_dir = tmp_path / "elsewhere"
    code, out, err = run(capsys, "export", "--job", "1", "--out", str(out_dir), "--home", str(judged_home))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and f"SDSTUDIO_HOME {judged_home} is read-only" in lines[0], err
    assert not out_dir.exists()  # files no export_metadata row would ever list


def test_serve_opens_a_read_only_home(judged_home, capsys):
    code, out, err = run(capsys, "serve", "--home", str(judged_home), "--notebook", "no-such.ipynb")
    assert code == 2 and "no-such.ipynb does not exist" in err, err  # got past the home, to the page


def test_a_notebook_upload_into_a_read_only_home_is_one_line(judged_home):
    from datetime import datetime, timezone

    from sdstudio.ui.generate import GenerateApp

    app = GenerateApp(home=judged_home, provider="openai_compatible", model="m", base_url="http://127.0.0.1:9/v1")
    app.topics_upload.value = ({"name": "t.txt", "type": "text/plain", "size": 6,
                                "last_modified": datetime.now(timezone.utc), "content": memoryview(b"A\nB\n")},)
    assert f"SDSTUDIO_HOME {judged_home} is read-only" in app.controls.status.value
    assert app.save_config() is None and "cannot save" in app.controls.status.value
