"""The AMP's Application script: ``sdstudio serve --cdsw`` (Voilà on 127.0.0.1:$CDSW_APP_PORT, the home dashboard
first, the review desk signed in by Cloudera AI's proxy). See sdstudio/commands/serve.py and sdstudio/cloudera.py."""
from __future__ import annotations

import sys

from sdstudio.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", "--cdsw", *sys.argv[1:]]))
