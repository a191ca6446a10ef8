"""``sdstudio serve``: the notebooks as Voilà dashboards (what ``make studio`` runs); ``--cdsw``: as a Cloudera AI
Application (the AMP's start_application, cml/app.py), on 127.0.0.1:$CDSW_APP_PORT with the proxy's user header
passed to the pages (sdstudio/cloudera.py)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..cloudera import APP_HOST, ORIGIN_ENV, USER_HEADER, USER_HEADER_ENV, app_port, header_variable, origin_pattern
from ..errors import SdstudioError

NOTEBOOKS = Path(__file__).resolve().parent.parent.parent / "notebooks"


def register(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser("serve", help="serve the dashboards with Voilà")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8866)
    serve.add_argument("--notebook", default="00_home.ipynb", help="page to open first")
    serve.add_argument("--notebooks", default=str(NOTEBOOKS), help=argparse.SUPPRESS)
    serve.add_argument("--home", help="SDSTUDIO_HOME (default ~/sdstudio)")
    serve.add_argument("--cdsw", action="store_true",
                       help="serve as a Cloudera AI Application: 127.0.0.1:$CDSW_APP_PORT, reviewers named by the "
                            "proxy's user header")
    serve.add_argument("--user-header", default=None,
                       help=f"with --cdsw: the request header naming the signed-in user (default {USER_HEADER})")
    serve.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Serve the notebooks as Voilà dashboards, opening on the home notebook."""
    import subprocess

    from ..home import resolve_home
    from ..store import Store

    env = {k: v for k, v in os.environ.items() if k not in (USER_HEADER_ENV, ORIGIN_ENV)}  # only with --cdsw
    extra: list[str] = []
    if args.cdsw:
        # Cloudera AI's proxy forwards only to 127.0.0.1:$CDSW_APP_PORT, and signs the user in: Voilà hands the
        # header to each page's kernel, where the review desk records verdicts under that name alone
        args.host, args.port = APP_HOST, app_port()
        header = args.user_header or USER_HEADER
        env.pop(header_variable(header), None)  # only a request's own header names its user
        env[USER_HEADER_ENV] = header
        extra.append(f"--VoilaConfiguration.http_header_envs={[header]!r}")
        if origin_pattern():
            env[ORIGIN_ENV] = origin_pattern()
    home = resolve_home(args.home)
    Store.open(home).close()  # create/migrate metadata.db before the first page asks for it (a read-only home
    # is served as it is: the dashboards read it, and say so when asked to write)
    notebooks = Path(args.notebooks).resolve()
    page = notebooks / args.notebook
    if not page.is_file():
        raise SdstudioError(f"notebook {page} does not exist")
    env["SDSTUDIO_HOME"] = str(home)
    url = f"http://{args.host}:{args.port}/voila/render/{args.notebook}"
    print(f"sdstudio: home {home}\nsdstudio: serving {url}", file=sys.stderr, flush=True)
    # Voilà serving one notebook puts it at / but then serves no other page; serving the folder keeps every
    # page at /voila/render/NN_x.ipynb but opens on a file list. So: the folder, and / redirects to the home page.
    cmd = [sys.executable, "-m", "sdstudio.commands.serve", str(notebooks), f"--Voila.ip={args.host}",
           f"--port={args.port}", "--no-browser", "--Voila.show_tracebacks=False", *extra]
    return subprocess.call(cmd, env={**env, LANDING_ENV: args.notebook})


LANDING_ENV = "SDSTUDIO_LANDING"


def voila_main(argv: list[str] | None = None) -> None:
    """Voilà over the notebooks folder whose root (``/``, what a browser opens first) redirects to the landing
    notebook (``$SDSTUDIO_LANDING``); the file list stays at /voila/tree."""
    import tornado.web
    from jupyter_server.utils import url_path_join
    from voila.app import Voila

    class StudioVoila(Voila):
        def init_handlers(self) -> list:
            landing = url_path_join(self.base_url, "voila/render", os.environ.get(LANDING_ENV, "00_home.ipynb"))
            return [(self.server_url, tornado.web.RedirectHandler, {"url": landing, "permanent": False}), *super().init_handlers()]

        def start(self) -> None:
            if os.environ.get(ORIGIN_ENV):  # the Application's pages, served through Cloudera AI's proxy
                self.tornado_settings = {**self.tornado_settings, "allow_origin_pat": os.environ[ORIGIN_ENV]}
            super().start()

    StudioVoila.launch_instance(argv)


if __name__ == "__main__":
    voila_main()

