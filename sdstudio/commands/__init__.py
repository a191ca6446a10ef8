"""One module per ``sdstudio`` subcommand, each with ``register(subparsers)``; the CLI lists them in
the workflow registry (workflows/registry.py) and ``cli.UTILITY_COMMANDS``. A workflow adds its subcommand here when it works (never as a stub)."""
