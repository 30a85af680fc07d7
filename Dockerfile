# One image for the four services and the Anthropic API emulator.
# docker-compose.yml picks what runs: `python -m batchbus.services.<intake|batcher|poller|notifier>`
# or `python -m batchbus.emulator --host 0.0.0.0 --port 8787`. Health checks live in the compose file.
FROM python:3.11.14-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

RUN groupadd --system --gid 10001 batchbus \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin batchbus

WORKDIR /app

# Dependencies first, read from pyproject.toml (the package's own and its `local` extra's:
# the services and the emulator), so a code change does not reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; extra = p['optional-dependencies']; deps = p['dependencies'] + [d for e in ('services', 'local') for d in extra[e] if not d.startswith('batchbus')]; open('/tmp/requirements.txt', 'w').write(chr(10).join(deps) + chr(10))" \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# The project itself: the one `batchbus` package (batchbus/ links to the top-level folders).
# The sources are removed once installed, so every import comes from site-packages.
COPY batchbus ./batchbus
COPY shared ./shared
COPY services ./services
COPY emulator ./emulator
COPY launcher ./launcher
COPY cli ./cli
RUN pip install --no-deps . \
 && pip check \
 && rm -rf build ./*.egg-info batchbus shared services emulator launcher cli

USER 10001:10001

# Default metrics/health ports (intake, batcher, poller, notifier) and the emulator's port.
EXPOSE 9101 9102 9103 9104 8787

# Harmless default: compose (or `docker run IMAGE python -m batchbus.services.<name>`) says
# what to run.
CMD ["python", "-c", "print('batchbus image: run python -m batchbus.services.<intake|batcher|poller|notifier> or python -m batchbus.emulator')"]
