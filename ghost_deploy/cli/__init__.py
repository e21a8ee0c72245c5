"""The command line: `ghost-deploy` and `ghost-export`; argparse lives only here.

`main` and `export_main` are the console scripts' entry points (`ghost_deploy.cli:main`).
"""

from ghost_deploy.cli.main import export_main, main

__all__ = ["export_main", "main"]
