"""Intake: validates and deduplicates tasks, passes accepted ones to the batcher."""
