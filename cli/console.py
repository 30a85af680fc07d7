"""The two consoles: results and summaries on stdout, progress and errors on stderr."""

import sys

from rich.console import Console

PIPED_WIDTH = 200  # a pipe or a file has no width; rich's 80 would cut ids and amounts


# Made per use, not at import: a Console settles on colours when it is created, so one made
# before a test runner (or a pipe) took over stdout would write escape codes into it.
def stdout() -> Console:
    return Console(highlight=False, soft_wrap=True,
                   width=None if sys.stdout.isatty() else PIPED_WIDTH)


def stderr() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True,
                   width=None if sys.stderr.isatty() else PIPED_WIDTH)
