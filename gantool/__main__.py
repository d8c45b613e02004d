"""`python -m gantool` runs the CLI."""
from gantool.cli import app

app(prog_name="gantool")
