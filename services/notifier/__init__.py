"""Notifier: reads ended batches' results, publishes one final result per task, retries."""
