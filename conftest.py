"""Repo-wide pytest setup. The notebooks (run by nbval in their own kernels) inherit this process's
environment, so point them at a throw-away SDSTUDIO_HOME and at a fake OpenAI-compatible server (on
loopback, in this process) before any kernel starts, and ask them to run their workflow headless
(SDSTUDIO_AUTORUN=1). 01_generate runs on the embedded model, so one notebook proves the offline path."""
import os
import tempfile


def pytest_configure(config):
    if "SDSTUDIO_TEST_HOME" not in os.environ:
        os.environ["SDSTUDIO_TEST_HOME"] = tempfile.mkdtemp(prefix="sdstudio-nb-")
    os.environ["SDSTUDIO_HOME"] = os.environ["SDSTUDIO_TEST_HOME"]
    if not any("notebooks" in str(arg) for arg in config.args):
        return
    from tests.fakes.openai_server import FakeOpenAIServer

    server = FakeOpenAIServer()
    server.start()
    config._sdstudio_fake_server = server
    os.environ.update(SDSTUDIO_AUTORUN="1", SDSTUDIO_PROVIDER="openai_compatible", SDSTUDIO_BASE_URL=server.url,
                      SDSTUDIO_MODEL="fake-model", SDSTUDIO_GENERATE_PROVIDER="local")


def pytest_unconfigure(config):
    server = getattr(config, "_sdstudio_fake_server", None)
    if server is not None:
        server.stop()
