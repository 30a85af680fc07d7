from services.poller.app import app, settings
from shared.app import run

run(app, settings.http, default_port=9103)
