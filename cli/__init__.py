"""`batchbus`, the command line: submit tasks and follow them, replay results, see batches in
flight and what batching saved, and run the whole stack locally."""
