"""The `batchbus` command (installed by the project; also `python -m batchbus.cli`)."""

import typer

from batchbus.cli.commands import cost, results, status, submit, up

app = typer.Typer(
    name="batchbus", no_args_is_help=True, add_completion=False,
    pretty_exceptions_show_locals=False,  # locals could hold task bodies or keys
    help="Run LLM work through the Message Batches API at half price, over NATS. "
         "Every command reads NATS_URL (or --nats).")

app.command("submit", help=submit.HELP)(submit.submit)
app.command("results")(results.results)
app.command("status")(status.status)
app.command("cost")(cost.cost)
app.command("up")(up.up)
