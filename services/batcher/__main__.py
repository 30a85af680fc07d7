from batchbus.services import run_service

run_service("batcher")
