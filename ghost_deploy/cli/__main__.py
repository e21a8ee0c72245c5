"""`python -m ghost_deploy.cli`: the `ghost-deploy` command (as `python -m ghost_deploy`)."""

import sys

from ghost_deploy.cli.main import main

sys.exit(main())
