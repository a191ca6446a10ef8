"""``sdstudio models``: what a provider offers (also proves the endpoint and credentials work)."""
from __future__ import annotations

import argparse
import json

from .common import EXIT_OK, add_output_flags, build_config


def register(sub: argparse._SubParsersAction) -> None:
    from ..providers import provider_names

    models = sub.add_parser("models", help="list the models a provider offers")
    models.add_argument("--provider", required=True, help=" | ".join(provider_names()))
    for flag in ("--base-url", "--region", "--api-key-env", "--model"):
        models.add_argument(flag)
    models.add_argument("--domain", help="Cloudera AI Inference: the service's domain, whose endpoints are listed "
                                         "by name (default $CAII_DOMAIN)")
    add_output_flags(models)
    models.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..config import ModelSpec
    from ..providers import list_models
    from ..providers.caii import service_root

    if args.domain:  # a base_url that is only the service's root lists its endpoints (providers/caii.py)
        args.base_url = service_root(args.domain)
    spec = build_config(ModelSpec, {k: v for k, v in {
        "provider": args.provider, "base_url": args.base_url, "region": args.region,
        "api_key_env": args.api_key_env, "model": args.model}.items() if v is not None}, "models flags")
    models = list_models(spec)
    print(json.dumps(models) if args.json else "\n".join(models))
    return EXIT_OK

