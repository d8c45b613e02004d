"""gantool's command line: the app (cli.app) with one small module a command, each registering on it."""
from gantool.cli.app import app
# Importing each command module registers its command(s) on `app`.
from gantool.cli import bench_cmd, demo_cmd, eval_cmd, export_cmd, serve_cmd, train_cmd  # noqa: E402,F401

__all__ = ["app"]
