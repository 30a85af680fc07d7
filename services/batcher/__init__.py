"""Batcher: groups accepted tasks into batches and submits them, write-ahead."""
