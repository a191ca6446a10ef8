"""What Cloudera AI gives a process, in one place: the Application's port and the user its proxy signed in.

An Application must listen on ``127.0.0.1:$CDSW_APP_PORT``; Cloudera AI's authenticating proxy in front of it
names the signed-in user in a request header (``Remote-User``). ``sdstudio serve --cdsw`` asks Voilà to pass that
header to each page's kernel (Voilà's ``http_header_envs``: the header ``Remote-User`` becomes the variable
``HTTP_REMOTE_USER``) and says which header it trusts in ``SDSTUDIO_USER_HEADER``. ``proxy_user()`` reads it
only then: anywhere else a stray ``HTTP_REMOTE_USER`` names nobody.
"""
from __future__ import annotations

import os
import re

from .errors import ConfigError

APP_PORT_ENV = "CDSW_APP_PORT"
APP_HOST = "127.0.0.1"  # the only address Cloudera AI's proxy forwards an Application's traffic to
USER_HEADER = "Remote-User"
USER_HEADER_ENV = "SDSTUDIO_USER_HEADER"
DOMAIN_ENV = "CDSW_DOMAIN"  # the workspace's domain; Applications are served from subdomains of it
ORIGIN_ENV = "SDSTUDIO_ALLOW_ORIGIN_PAT"  # what serve --cdsw hands its Voilà (commands/serve.py)


def header_variable(header: str) -> str:
    """The variable Voilà sets in a kernel for request header ``header`` (CGI style, RFC 3875 4.1.18)."""
    return "HTTP_" + header.upper().replace("-", "_")


def proxy_user() -> str | None:
    """The user Cloudera AI's proxy signed in for this page's request; None when the page is not served by
    ``sdstudio serve --cdsw`` or the request carried no such header."""
    header = os.environ.get(USER_HEADER_ENV)
    if not header:
        return None
    return (os.environ.get(header_variable(header)) or "").strip() or None


def app_port() -> int:
    """``$CDSW_APP_PORT``, the port an Application must serve on; one line when it is missing or not a port."""
    value = os.environ.get(APP_PORT_ENV, "").strip()
    if not value:
        raise ConfigError(f"{APP_PORT_ENV} is not set: --cdsw serves a Cloudera AI Application, which sets it; "
                          f"elsewhere run `sdstudio serve --port N`")
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise ConfigError(f"{APP_PORT_ENV}={value!r} is not a TCP port")
    return int(value)


def origin_pattern() -> str | None:
    """The browser origins the Application's pages come from (``https://SUBDOMAIN.$CDSW_DOMAIN``), as Jupyter
    server's ``allow_origin_pat``: behind the proxy the page's Origin need not match the Host the server sees, and
    a refused origin would leave every widget dead; any other site's origin stays refused."""
    domain = os.environ.get(DOMAIN_ENV, "").strip().lower().rstrip(".")
    if not domain:
        return None
    return rf"^https?://([a-z0-9-]+\.)*{re.escape(domain)}(:\d+)?$"
