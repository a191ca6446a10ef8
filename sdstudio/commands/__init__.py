"""One module per ``sdstudio`` subcommand, each with ``register(subparsers)``; the CLI lists them in
``cli.COMMANDS``. A workflow adds its subcommand here when it works (never as a stub)."""
