"""The `batchbus` command (installed by the project; also `python -m batchbus.cli`)."""

import typer

from batchbus.cli.commands import cost, env, payloads, results, status, submit, up

app = typer.Typer(
    name="batchbus", no_args_is_help=True, add_completion=False,
    pretty_exceptions_show_locals=False,  # locals could hold task bodies or keys
    help="Run LLM work through the Message Batches API at half price, over NATS. "
         "Every command reads NATS_URL (or --nats); without it, the NATS server of a "
         "running `batchbus up`.")

app.command("submit", help=submit.HELP)(submit.submit)
app.command("results", help=results.HELP)(results.results)
app.command("status", help=status.HELP)(status.status)
app.command("cost", help=cost.HELP)(cost.cost)
app.command("up", help=up.UP_HELP)(up.up)
app.command("env", help=env.HELP)(env.env)
app.add_typer(payloads.app)
