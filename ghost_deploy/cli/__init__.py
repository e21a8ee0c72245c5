"""The command line: `ghost-deploy` and `ghost-export`; argparse lives only here."""
