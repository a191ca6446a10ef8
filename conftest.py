"""Repo-wide pytest setup. The notebooks (run by nbval in their own kernels) inherit this process's
environment, so point them at a throw-away SDSTUDIO_HOME before any kernel starts."""
import os
import tempfile


def pytest_configure(config):
    if "SDSTUDIO_TEST_HOME" not in os.environ:
        os.environ["SDSTUDIO_TEST_HOME"] = tempfile.mkdtemp(prefix="sdstudio-nb-")
    os.environ["SDSTUDIO_HOME"] = os.environ["SDSTUDIO_TEST_HOME"]
