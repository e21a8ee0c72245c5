"""`python -m ghost_deploy`: the `ghost-deploy` command."""

import sys

from ghost_deploy.cli.main import main

sys.exit(main())
