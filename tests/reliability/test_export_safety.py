"""Exports never destroy files: issue #17's "Data loss in export" and the `--hf-repo owner/name.git` case.

Each export gets its own new folder, an --out folder that holds anything is refused unless --overwrite (and
even then only the export's own files are replaced, never a README.md no export wrote), system folders and the
home are refused, every export_metadata row keeps pointing at files with the hashes and row counts it recorded,
and the temps of a killed export are removed by the next one. Real files, real processes (SIGKILL), no mocks.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sdstudio.cli import main
from sdstudio.config import ExportJob
from sdstudio.errors import ConfigError
from sdstudio.export import export_dataset
from sdstudio.export_files import host_tag, temp_name
from sdstudio.export_paths import Destination, claim_version, publish
from sdstudio.store import Record

ROOT = Path(__file__).resolve().parents[2]


# -- helpers ---------------------------------------------------------------------------------------

def sft_job(store, n: int = 6, size: int = 0) -> int:
    job = store.create_job("generation", use_case="code_generation", model_id="fake-model", status="done",
                           technique="sft", requested=n, topics=["Heaps"])
    pad = "x" * size
    store.add_records([Record("generation", job, f"k{i}", "ok", topic="Heaps",
                              output={"question": f"How do {i}?", "solution": f"Like {i}.{pad}"}) for i in range(n)])
    store.refresh_counts("generation", job)
    return job


def tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones too) -> sha256 of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def export_rows(home: Path) -> list[dict]:
    with sqlite3.connect(home / "metadata.db") as conn:
        conn.row_factory = sqlite3.Row
        rows = [dict(r) for r in conn.execute("SELECT * FROM export_metadata ORDER BY id")]
    for row in rows:
        for key in ("files", "file_hashes", "config"):
            row[key] = json.loads(row[key]) if row[key] else None
    return rows


def rows_in(path: Path) -> int:
    if path.suffix == ".jsonl":
        return len(path.read_text(encoding="utf-8").splitlines())
    if path.suffix == ".csv":
        import pandas as pd

        return len(pd.read_csv(path))
    import pyarrow.parquet as pq

    return pq.read_metadata(path).num_rows


def check_recorded_files(home: Path) -> int:
    """Every export_metadata row's files exist with the recorded sha256, size and row count; returns how many
    files were checked."""
    checked = 0
    for row in export_rows(home):
        assert row["files"], f"export {row['id']} records no files"
        assert {f["name"]: f["sha256"] for f in row["files"]} == row["file_hashes"]
        for entry in row["files"]:
            path = Path(row["path"]) / entry["name"]
            assert path.is_file(), f"export {row['id']}: {path} is gone"
            assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"], f"export {row['id']}: {path} changed"
            assert path.stat().st_size == entry["bytes"]
            if entry["rows"] is not None:
                assert rows_in(path) == entry["rows"], f"export {row['id']}: {path} row count"
            checked += 1
    return checked


def run_cli(capsys, *args: str, home: Path) -> tuple[int, str, str]:
    code = main(["export", *args, "--home", str(home)])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("sdstudio: error: "), err
    return lines[0]


@pytest.fixture
def repo(tmp_path) -> Path:
    """A user's repository: its own README.md, a train.jsonl of its own, a .git folder and a source file."""
    folder = tmp_path / "my-repo"
    (folder / ".git").mkdir(parents=True)
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (folder / "README.md").write_text("# My project\n\nHand-written docs.\n")
    (folder / "train.jsonl").write_text('{"mine": 1}\n')
    (folder / "src.py").write_text("print('hi')\n")
    return folder


# -- --out into a user's folder --------------------------------------------------------------------

def test_out_dot_in_a_users_repository_is_refused_with_one_line_and_touches_nothing(store, home, repo, capsys,
                                                                                    monkeypatch):
    job = sft_job(store)
    before = tree(repo)
    monkeypatch.chdir(repo)
    code, out, err = run_cli(capsys, "--job", str(job), "--style", "sft-messages", "--out", ".", home=home)
    line = one_error_line(err)
    assert code == 2 and out == ""
    assert f"--out {repo} is not empty (4 entries" in line and "--overwrite" in line
    assert tree(repo) == before and export_rows(home) == []


def test_overwrite_replaces_only_the_exports_own_files_and_keeps_the_users_readme(store, home, repo, capsys):
    job = sft_job(store, n=4)
    before = tree(repo)
    code, out, err = run_cli(capsys, "--job", str(job), "--style", "sft-messages", "--out", str(repo), "--overwrite",
                             "--json", home=home)
    assert code == 0, err
    after = tree(repo)
    assert after["README.md"] == before["README.md"] and after["src.py"] == before["src.py"]
    assert after[".git/HEAD"] == before[".git/HEAD"]
    assert after["train.jsonl"] != before["train.jsonl"] and rows_in(repo / "train.jsonl") == 4
    assert set(after) == set(before) | {"DATASET_CARD.md"}  # no temp file left either
    assert (repo / "DATASET_CARD.md").read_text().startswith("---\n")
    summary = json.loads(out)
    assert [Path(p).name for p in summary["paths"]] == ["train.jsonl", "DATASET_CARD.md"]
    assert any("README.md" in note and "DATASET_CARD.md" in note for note in summary["notes"])
    (row,) = export_rows(home)
    replaced = {f["name"]: f.get("replaced_sha256") for f in row["files"]}
    assert replaced == {"train.jsonl": before["train.jsonl"], "DATASET_CARD.md": None}
    assert check_recorded_files(home) == 2


def test_a_card_an_export_wrote_is_replaced_by_the_next_overwrite_but_an_edited_one_is_kept(store, home, tmp_path):
    job = sft_job(store, n=3)
    out = tmp_path / "data"
    first = export_dataset(ExportJob(jobs=[job], style="sft-messages", out=str(out)), store=store)
    assert [Path(p).name for p in first.paths] == ["train.jsonl", "README.md"]
    second = export_dataset(ExportJob(jobs=[job], style="sft-prompt-completion", out=str(out), overwrite=True),
                            store=store)
    assert [Path(p).name for p in second.paths] == ["train.jsonl", "README.md"]  # its own card: replaced
    (out / "README.md").write_text((out / "README.md").read_text() + "\nMy notes.\n")
    edited = tree(out)["README.md"]
    third = export_dataset(ExportJob(jobs=[job], style="sft-messages", out=str(out), overwrite=True), store=store)
    assert [Path(p).name for p in third.paths] == ["train.jsonl", "DATASET_CARD.md"]
    assert tree(out)["README.md"] == edited


def test_a_readme_and_a_dataset_card_of_the_users_refuse_the_export(store, home, repo):
    (repo / "DATASET_CARD.md").write_text("mine too\n")
    before = tree(repo)
    with pytest.raises(ConfigError, match="holds a README.md and a DATASET_CARD.md that no sdstudio export wrote"):
        export_dataset(ExportJob(jobs=[sft_job(store)], out=str(repo), overwrite=True), store=store)
    assert tree(repo) == before


def test_overwrite_without_out_is_refused_with_one_line(store, home, capsys):
    code, out, err = run_cli(capsys, "--job", str(sft_job(store)), "--overwrite", home=home)
    assert code == 2 and "overwrite applies to out only" in one_error_line(err)


@pytest.mark.parametrize("target", ["/etc", "/etc/sdstudio-test", "/usr/lib/x", "/", "/var", "/tmp", "HOME",
                                    "SDSTUDIO_HOME", "SDSTUDIO_HOME/exports/mine", "LINK_TO_ETC"])
def test_system_folders_the_home_and_sdstudios_own_folders_are_refused(store, home, tmp_path, target, monkeypatch):
    user_home = tmp_path / "user"
    user_home.mkdir()
    monkeypatch.setenv("HOME", str(user_home))
    (tmp_path / "etc-link").symlink_to("/etc")
    path = {"HOME": str(user_home), "SDSTUDIO_HOME": str(home), "SDSTUDIO_HOME/exports/mine": str(home / "exports" / "mine"),
            "LINK_TO_ETC": str(tmp_path / "etc-link" / "sub")}.get(target, target)
    with pytest.raises(ConfigError) as err:
        export_dataset(ExportJob(jobs=[sft_job(store)], out=path, overwrite=True), store=store)
    assert str(err.value).startswith("refusing to export into ") and "\n" not in str(err.value)
    assert export_rows(home) == [] and not (home / "exports" / "mine").exists()
    assert not Path("/etc/sdstudio-test").exists()


def test_out_etc_on_the_command_line_is_one_line_exit_2(store, home, capsys):
    code, out, err = run_cli(capsys, "--job", str(sft_job(store)), "--out", "/etc", home=home)
    assert code == 2 and "refusing to export into /etc: it is inside the system folder /etc" in one_error_line(err)


def test_a_file_that_appears_in_out_mid_export_is_never_clobbered(tmp_path):
    """Names planned as new are placed without replacing; one that appeared meanwhile stops the export and
    takes back what it had already placed."""
    out, staging = tmp_path / "out", tmp_path / "out" / temp_name("staging-test")
    staging.mkdir(parents=True)
    for name in ("train.jsonl", "test.jsonl", "README.md"):
        (staging / name).write_text(f"ours {name}\n")
    destination = Destination(root=out, versioned=False, data=["train.jsonl", "test.jsonl"])
    (out / "test.jsonl").write_text("someone else's\n")  # appeared after the plan said the folder was empty
    with pytest.raises(ConfigError, match="test.jsonl appeared while exporting"):
        publish(destination, staging)
    assert (out / "test.jsonl").read_text() == "someone else's\n"
    assert not (out / "train.jsonl").exists() and not (out / "README.md").exists()


# -- the default destination: a new version per export --------------------------------------------

def test_re_exports_of_one_job_keep_every_recorded_file_with_its_hash(store, home):
    """The issue's case: another format, another split, --reviewed-only, all under the default name."""
    job = sft_job(store, n=24)
    ids = [r["id"] for r in store.records("generation", job, status="ok")]
    store.add_review(ids[0], "rita", "accept")
    configs = [dict(style="sft-messages"), dict(style="sft-messages", format="parquet"),
               dict(style="sft-messages", format="csv", test_fraction=0.25), dict(style="sft-messages", reviewed_only=True),
               dict(style="raw"), dict(style="sft-messages", test_fraction=0.5, seed=1)]
    results = [export_dataset(ExportJob(jobs=[job], **c), store=store) for c in configs]
    folder = home / "exports" / f"job-{job}-sft-messages"
    assert [r.directory for r in results if r.style == "sft-messages"] == [str(folder / f"v{n}") for n in range(1, 6)]
    assert [r.rows for r in results] == [24, 24, 24, 1, 24, 24]
    assert check_recorded_files(home) == 2 + 2 + 3 + 2 + 2 + 3
    rows = export_rows(home)
    assert [r["row_count"] for r in rows] == [24, 24, 24, 1, 24, 24]
    assert [sum(f["rows"] or 0 for f in r["files"]) for r in rows] == [24, 24, 24, 1, 24, 24]


def test_the_old_flat_layout_of_an_earlier_version_is_left_alone(store, home):
    job = sft_job(store, n=2)
    legacy = home / "exports" / f"job-{job}-sft-messages"
    legacy.mkdir(parents=True)
    (legacy / "train.jsonl").write_text('{"old": 1}\n')
    (legacy / "test.jsonl").write_text('{"old": 2}\n')
    before = tree(legacy)
    result = export_dataset(ExportJob(jobs=[job], style="sft-messages"), store=store)
    assert result.directory == str(legacy / "v1")
    assert {k: v for k, v in tree(legacy).items() if not k.startswith("v1/")} == before


def test_concurrent_exports_of_one_job_each_get_their_own_version(store, home):
    """Three processes export the same job under the same name at once: three folders, three rows, every
    recorded file intact."""
    job = sft_job(store, n=200, size=2000)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SDSTUDIO_DEBUG": ""}
    procs = [subprocess.Popen([sys.executable, "-m", "sdstudio.cli", "export", "--job", str(job), "--style", "raw",
                               "--name", "same", "--json", "--home", str(home)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [e for _, e in outputs]
    directories = sorted(json.loads(out)["directory"] for out, _ in outputs)
    assert directories == [str(home / "exports" / "same" / f"v{n}") for n in (1, 2, 3)]
    assert sorted(p.name for p in (home / "exports" / "same").iterdir()) == ["v1", "v2", "v3"]
    assert check_recorded_files(home) == 6


def test_claiming_a_version_from_many_threads_gives_each_its_own_folder(tmp_path):
    root = tmp_path / "exports" / "race"
    root.mkdir(parents=True)
    stagings = []
    for i in range(16):
        staging = root / temp_name(f"staging-{i}")
        staging.mkdir()
        (staging / "train.jsonl").write_text(f"{i}\n")
        stagings.append(staging)
    claimed: list[tuple[Path, int]] = []
    barrier = threading.Barrier(len(stagings))

    def claim(staging: Path) -> None:
        barrier.wait()
        claimed.append(claim_version(root, staging))

    threads = [threading.Thread(target=claim, args=(s,)) for s in stagings]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(n for _, n in claimed) == list(range(1, 17))
    assert sorted((path / "train.jsonl").read_text() for path, _ in claimed) == sorted(f"{i}\n" for i in range(16))


# -- temp files ------------------------------------------------------------------------------------

def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temps_of_dead_processes_are_removed_and_a_live_ones_kept(store, home):
    job = sft_job(store, n=2)
    folder = home / "exports" / f"job-{job}-sft-messages"
    folder.mkdir(parents=True)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        gone = dead_pid()
        planted = {
            f".train.parquet.{gone}.tmp": "dead, pid-only form of earlier versions",
            f".train.jsonl.{gone}@{host_tag()}.tmp": "dead, this host",
            f".README.md.{sleeper.pid}@{host_tag()}.tmp": "live process",
            f".train.jsonl.{gone}@another-host.tmp": "another host, recent: cannot tell, kept",
            "notes.tmp": "not a temp name of ours",
        }
        for name, text in planted.items():
            (folder / name).write_text(text)
        staging = folder / f".staging-0000.{gone}@{host_tag()}.tmp"  # a killed export's staging folder
        staging.mkdir()
        (staging / "train.jsonl").write_text("half")
        result = export_dataset(ExportJob(jobs=[job], style="sft-messages"), store=store)
        left = sorted(p.name for p in folder.iterdir())
        assert left == sorted([f".README.md.{sleeper.pid}@{host_tag()}.tmp", f".train.jsonl.{gone}@another-host.tmp",
                               "notes.tmp", "v1"])
        assert any("removed 3 temp file(s) a killed export left" in note for note in result.notes)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_an_old_temp_of_another_host_is_removed(store, home):
    job = sft_job(store, n=2)
    folder = home / "exports" / f"job-{job}-raw"
    folder.mkdir(parents=True)
    old = folder / ".train.jsonl.4242@elsewhere.tmp"
    old.write_text("x")
    day_and_more = time.time() - 25 * 3600
    os.utime(old, (day_and_more, day_and_more))
    export_dataset(ExportJob(jobs=[job], style="raw"), store=store)
    assert not old.exists()


def test_a_sigkill_mid_write_leaves_only_a_temp_that_the_next_export_removes(store, home):
    """A real export of a big job killed while it writes: no version folder appears (it is claimed only when
    complete), its staging temp is left, and the next export removes it and records only files that exist."""
    job = sft_job(store, n=6000, size=6000)  # ~36 MB of JSONL: long enough to be caught mid-write
    folder = home / "exports" / "big"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SDSTUDIO_DEBUG": ""}
    proc = subprocess.Popen([sys.executable, "-m", "sdstudio.cli", "export", "--job", str(job), "--style", "raw",
                             "--format", "parquet", "--test-fraction", "0.5", "--name", "big", "--home", str(home)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    caught = False
    while time.monotonic() < deadline and proc.poll() is None:
        stagings = list(folder.glob(".staging-*.tmp")) if folder.exists() else []
        if stagings:  # the staging folder lives exactly as long as the files are being written
            os.kill(proc.pid, signal.SIGKILL)
            caught = True
            break
        time.sleep(0.002)
    proc.wait(timeout=30)
    assert caught, "the export finished before its staging folder was seen: make the job bigger"
    assert proc.returncode == -signal.SIGKILL
    left = [p.name for p in folder.iterdir()]
    assert len(left) == 1 and left[0].startswith(".staging-") and left[0].endswith(f".{proc.pid}@{host_tag()}.tmp")
    assert export_rows(home) == []
    result = export_dataset(ExportJob(jobs=[job], style="raw", name="big"), store=store)
    assert sorted(p.name for p in folder.iterdir()) == ["v1"] and result.directory == str(folder / "v1")
    assert any("removed 1 temp file(s)" in note for note in result.notes)
    assert check_recorded_files(home) == 2


# -- bad Hub repo ids ------------------------------------------------------------------------------

@pytest.mark.parametrize("repo_id, says", [
    ("owner/name.git", "cannot end in .git"),
    ("https://huggingface.co/datasets/owner/name.git", "cannot end in .git"),
    ("owner/na..me", "not a dataset repo id"),
    ("owner/-name", "not a dataset repo id"),
    ("owner/name/extra", "not a dataset repo id"),
    ("owner/nämé", "not a dataset repo id"),
])
def test_a_malformed_hub_repo_id_is_refused_before_any_file_is_written(store, home, monkeypatch, repo_id, says):
    monkeypatch.setenv("HF_TOKEN", "hf_x")
    with pytest.raises(ConfigError, match=says):
        export_dataset(ExportJob(jobs=[sft_job(store)], hf_repo=repo_id, hf_endpoint="http://127.0.0.1:9"),
                       store=store)
    assert not (home / "exports").exists() or not any((home / "exports").iterdir())
    assert export_rows(home) == []


def test_hf_repo_dot_git_on_the_command_line_is_one_line_exit_2(store, home, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_x")
    connect = socket.socket.connect

    def no_network(sock, address):  # the refusal must come before anything is sent
        raise AssertionError(f"tried to reach {address}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    code, out, err = run_cli(capsys, "--job", str(sft_job(store)), "--hf-repo", "owner/name.git", home=home)
    monkeypatch.setattr(socket.socket, "connect", connect)
    assert code == 2 and "hf_repo 'owner/name.git' is not a dataset repo id: it cannot end in .git" in one_error_line(err)
    assert not any((home / "exports").iterdir()) and export_rows(home) == []
