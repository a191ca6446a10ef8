"""Each workflow family's job config, one module per family (generation, evaluation, export, workflow,
alignment, documents). They build on the base in ``sdstudio.config`` (StrictModel, ModelSpec, RunSettings,
the shared validators and canonical() helpers), which re-exports every one of them.

``sdstudio.config`` is imported first: it imports these modules at its end, so starting from one of them
(``import sdstudio.configs.generation``) must not leave it half-built when ``config.py`` asks for its class.
"""
from .. import config as _config  # noqa: F401 - imported for its side effect: the base first (see above)
