"""The SparkSession a run uses, and what the driver ships to executors besides the items: the secrets.

A session already running in the process (a Cloudera AI session's ``spark``, a notebook's, a test's) is used
as it is; otherwise one is created for the master given (default ``local[2]``), named "sdstudio job N", with
quiet logs. A ``local[N]`` master gets a retry count (``local[N,4]``): Spark's local mode otherwise never
retries a task, and a lost Python worker must be retried on a laptop as on a cluster.
"""
from __future__ import annotations

import os
import re
import sys
import warnings
from typing import Any
from urllib.parse import quote, urlencode

DEFAULT_MASTER = "local[2]"
LOCAL_TASK_ATTEMPTS = 4
# Spark's default (?i)secret|password|token|access[.]?key misses OPENAI_API_KEY, CDP_TOKEN's cousins named *_KEY,
# and Basic-auth credentials: a session sdstudio creates redacts these too, should anyone put them in the conf
REDACTION_REGEX = r"(?i)secret|password|passwd|token|access[.]?key|api[._-]?key|_key$|credential|authorization|bearer"


def with_task_retries(master: str) -> str:
    """``local``, ``local[N]``, ``local[*]`` -> the same with a task retry count; anything else unchanged."""
    if master == "local":
        return f"local[1,{LOCAL_TASK_ATTEMPTS}]"
    match = re.fullmatch(r"local\[(\d+|\*)\]", master)
    return f"local[{match.group(1)},{LOCAL_TASK_ATTEMPTS}]" if match else master


def spark_session(master: str | None, job_id: int) -> Any:
    """The running session, or a new one for ``master``."""
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas")
    try:
        from pyspark import SparkContext
        from pyspark.sql import SparkSession
    except ImportError:
        from ..errors import ConfigError

        raise ConfigError("the spark executor needs pyspark and a Java runtime: pip install 'sdstudio[spark]' "
                          "(and a JRE, e.g. apt-get install default-jre-headless)") from None
    if SparkContext._active_spark_context is not None:
        spark = SparkSession.builder.getOrCreate()
        running = spark.sparkContext.master
        if master and with_task_retries(master) != running and master != running:
            warnings.warn(f"a Spark session on {running} is already running in this process; it is used, not {master}",
                          stacklevel=3)
        return spark
    chosen = with_task_retries(master or DEFAULT_MASTER)
    if chosen.startswith("local"):  # the executors' Python is this one (with sdstudio installed)
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    spark = (SparkSession.builder.master(chosen).appName(f"sdstudio job {job_id}")
             .config("spark.redaction.regex", REDACTION_REGEX)
             .config("spark.ui.showConsoleProgress", "false")
             .getOrCreate())
    spark.sparkContext.setLogLevel("WARN")
    return spark


def collector_host(spark: Any) -> str:
    """Where the executors reach the driver: loopback for a local master, else the driver's address."""
    conf = spark.sparkContext.getConf()
    if spark.sparkContext.master.startswith("local"):
        return "127.0.0.1"
    return conf.get("spark.driver.bindAddress", None) or conf.get("spark.driver.host", None) or "0.0.0.0"


def redaction_gaps(spark: Any, names: list[str]) -> list[str]:
    """Secret variables a user passed as ``spark.executorEnv.NAME`` that the session's ``spark.redaction.regex``
    does not hide (the Spark UI shows them): the driver warns about them. sdstudio never puts one in the conf."""
    conf = spark.sparkContext.getConf()
    pattern = conf.get("spark.redaction.regex", r"(?i)secret|password|token|access[.]?key")
    pattern = pattern[4:] if pattern.startswith("(?i)") else pattern
    return [name for name in names if conf.contains(f"spark.executorEnv.{name}")
            and not re.search(pattern, f"spark.executorEnv.{name}", re.IGNORECASE)]


def warn_redaction_gaps(spark: Any, names: list[str]) -> None:
    """Warn (at the run's caller) about the first of ``redaction_gaps``: the user should remove it from the conf."""
    gaps = redaction_gaps(spark, names)
    if gaps:
        warnings.warn(f"spark.executorEnv.{gaps[0]} is shown in the Spark UI (spark.redaction.regex does not match "
                      "it): remove it, sdstudio sends credentials to the executors itself", stacklevel=3)


# -- secrets, sent over the collector connection only ----------------------------------------------------

def provider_secrets(provider: Any) -> tuple[dict[str, str], str | None]:
    """(environment variables the executors' provider reads its credentials from, the endpoint URL with its
    credentials when the stored one has them masked). Never logged, never in the Spark conf."""
    spec = provider.spec
    names = [name for name in (spec.api_key_env, getattr(type(provider), "key_env", None)) if name]
    names += list(getattr(type(provider), "secret_env", ()))  # e.g. Bedrock's AWS credential chain variables
    env = {name: os.environ[name] for name in names if os.environ.get(name)}
    key = getattr(provider, "_api_key", None)  # e.g. Cloudera AI's token from the session's /tmp/jwt file
    variable = spec.api_key_env or getattr(type(provider), "key_env", None)
    if key and variable and variable not in env:
        env[variable] = key
    return env, revealed_url(spec.base_url)


def revealed_url(shown: str | None) -> str | None:
    """The full URL (user:password, query) that a masked ``base_url`` stands for in this process; None when
    it has no credentials (the stored form is then the URL itself)."""
    if not shown:
        return None
    from ..urlsecrets import reveal

    endpoint = reveal(shown)
    if not endpoint.has_secrets:
        return None
    scheme, sep, rest = endpoint.url.partition("://")
    userinfo = ""
    if endpoint.username is not None:
        userinfo = quote(endpoint.username, safe="")
        if endpoint.password is not None:
            userinfo += ":" + quote(endpoint.password, safe="")
        userinfo += "@"
    query = f"?{urlencode(list(endpoint.query))}" if endpoint.query else ""
    return f"{scheme}{sep}{userinfo}{rest}{query}"
