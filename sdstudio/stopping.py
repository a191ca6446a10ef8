"""Why a run stops before its items are done, and what the job says then: the user's Cancel, or a provider that
cannot serve the run at all. Kept beside ``engine.py``, which re-exports these names.

Cancel: nothing new is sent after it. Replies already on their way get ``CANCEL_GRACE_S`` to arrive, since a
remote provider bills them whether or not anyone waits, so keeping them saves paying twice on Resume; after that
they are abandoned, and an abandoned item leaves no row at all (it is not a failure), so Resume sends it. A
provider that computes its reply here and can stop between two tokens (the embedded model) declares
``cancel_grace_s = 0``: waiting would only keep the user waiting.
"""
from __future__ import annotations

from .errors import SdstudioError
from .providers.base import ProviderError

CANCEL_GRACE_S = 2.0


class Cancelled(Exception):
    """Cancel came while an item waited to be sent (a slot, a rate limit, a retry's backoff): it is not sent and
    leaves no row, so Resume sends it."""


class RunAborted(SdstudioError):
    """The provider cannot serve this run at all (credentials refused, endpoint unreachable, unknown model)."""


def is_fatal(exc: ProviderError, answered: int) -> bool:
    """Would every other item fail the same way? Refused credentials always; an unreachable endpoint or a 404
    only while nothing has been answered (afterwards it is one item's bad luck)."""
    if exc.kind == "auth":
        return True
    return not answered and (exc.unreachable or exc.status == 404)


def aborted(exc: ProviderError, refusals: list[str]) -> RunAborted:
    """The error a run stopped by ``exc`` raises: what was wrong and what to do (the job's saved rows stay)."""
    if exc.kind == "auth":
        hint = "fix the credentials, then run the job again (rows already saved are kept)"
    elif refusals:
        hint = (f"the first {len(refusals)} requests were all refused for this reason and none succeeded; "
                "fix the request (model parameters, structured_output, the server's settings), then run again")
    elif exc.unreachable:
        hint = "no request reached the provider; check base_url (or region) and that it is up, then run again"
    else:
        hint = "check the model id and base_url (`sdstudio models` lists the models), then run again"
    return RunAborted(f"{exc}; stopped the job: {hint}")
