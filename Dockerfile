# One image for every service of the stack (docker-compose.yml): the API, the projection workers, the
# dispatcher and the sandbox marketplaces differ only in their command.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
# The dependencies come from the hash-pinned lock (the sandbox extra included; `./dev lock` writes it),
# in a layer of their own that a change to src/ does not rebuild; then the project without dependencies.
COPY requirements/lock.txt ./requirements/
RUN python -m venv /opt/ledger \
    && /opt/ledger/bin/pip install --no-cache-dir --require-hashes -r requirements/lock.txt
COPY pyproject.toml README.md ./
COPY src ./src
RUN /opt/ledger/bin/pip install --no-cache-dir --no-deps . \
    && /opt/ledger/bin/pip check

FROM python:3.11-slim-bookworm
RUN useradd --create-home --uid 10001 ledger
COPY --from=build /opt/ledger /opt/ledger
COPY docker/demo-setup.sh /usr/local/bin/ledger-demo-setup
COPY marketplace-specs /opt/ledger/marketplace-specs
ENV PATH=/opt/ledger/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    LEDGER_DATA_DIR=/home/ledger/data \
    LEDGER_MARKETPLACE_SPECS=/opt/ledger/marketplace-specs
USER ledger
WORKDIR /home/ledger
EXPOSE 8000 8700
CMD ["ledger", "serve", "--host", "0.0.0.0", "--port", "8000", "--no-workers"]
