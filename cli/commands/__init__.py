"""One module per `batchbus` command."""
