"""`python -m batchbus.cli` runs the same app as the installed `batchbus` command."""

from batchbus.cli.main import app

app(prog_name="batchbus")
