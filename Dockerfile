# One image for the four services and the Anthropic API emulator.
# docker-compose.yml picks what runs: `python -m services.<intake|batcher|poller|notifier>`
# or `python -m emulator --host 0.0.0.0 --port 8787`. Health checks live in the compose file.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

RUN groupadd --system --gid 10001 batchbus \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin batchbus

WORKDIR /app

# Dependencies first, read from pyproject.toml, so a code change does not reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; open('/tmp/requirements.txt', 'w').write(chr(10).join(deps) + chr(10))" \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# The project itself: the packages listed in [tool.setuptools.packages.find].
COPY shared ./shared
COPY services ./services
COPY emulator ./emulator
RUN pip install --no-deps . \
 && pip check \
 && rm -rf build ./*.egg-info

USER 10001:10001

# Default metrics/health ports (intake, batcher, poller, notifier) and the emulator's port.
EXPOSE 9101 9102 9103 9104 8787

# Harmless default: compose (or `docker run IMAGE python -m services.<name>`) says what to run.
CMD ["python", "-c", "print('batchbus image: run python -m services.<intake|batcher|poller|notifier> or python -m emulator')"]
