"""The `corral` command line (entry point: `corral.cli.main:main`)."""
