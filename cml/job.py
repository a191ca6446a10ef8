"""The AMP's Job script: ``sdstudio ARGUMENTS`` (the Job's "Arguments" field), exiting with sdstudio's code so
Cloudera AI's job history marks the run (0 ok; 1 the job finished but too many items failed; 2 bad input,
config or environment, one line saying which; 130 cancelled, resumable with --resume) and its log ends with
the one-line summary.

Two conveniences for Jobs, whose arguments are fixed text: ``$VAR``/``${VAR}`` are expanded (``--config
$SDSTUDIO_HOME/jobs/nightly.yaml``; ``$SDSTUDIO_TODAY`` is the date as YYYYMMDD), and ``last:KIND`` stands for the newest finished job of that kind in
SDSTUDIO_HOME (``evaluate --job last:generation``), so dependent Jobs chain generation -> evaluation -> export.
"""
from __future__ import annotations

import os
import sys
import time

LAST = "last:"
TODAY_ENV = "SDSTUDIO_TODAY"  # YYYYMMDD of the run, for --seed


def newest_done(kind: str, home: str | None) -> str:
    """The id of the newest top-level job of ``kind`` that finished (``done``) in ``home``."""
    from sdstudio.errors import ConfigError
    from sdstudio.store import Store

    store = Store.open(home or os.environ.get("SDSTUDIO_HOME") or None)
    try:
        jobs = store.jobs(kind=kind)
    finally:
        store.close()
    done = jobs[(jobs["status"] == "done") & jobs["parent_id"].isna()]  # not an alignment job's stage
    if done.empty:
        raise ConfigError(f"{LAST}{kind}: no finished {kind} job in this home yet (`sdstudio jobs` lists them)")
    return str(int(done["id"].max()))


def expand(args: list[str]) -> list[str]:
    # a nightly Job's config is the same text every night, and the same config resumes the same job: --seed
    # $SDSTUDIO_TODAY makes each night's a new job (and new draws)
    os.environ.setdefault(TODAY_ENV, time.strftime("%Y%m%d"))
    args = [os.path.expandvars(a) for a in args]
    home = args[args.index("--home") + 1] if "--home" in args[:-1] else None
    return [newest_done(a[len(LAST):], home) if a.startswith(LAST) else a for a in args]


def main(argv: list[str] | None = None) -> int:
    from sdstudio.cli import main as sdstudio
    from sdstudio.errors import SdstudioError

    args = sys.argv[1:] if argv is None else argv
    if len(args) == 1 and " " in args[0]:  # the whole Arguments field as one word: split it as a shell would
        import shlex

        args = shlex.split(args[0])
    try:
        args = expand(args)
    except SdstudioError as exc:
        print(f"sdstudio: error: {exc}", file=sys.stderr)
        return 2
    print(f"sdstudio job: sdstudio {' '.join(args)}", file=sys.stderr, flush=True)
    return sdstudio(args)


if __name__ == "__main__":
    sys.exit(main())
