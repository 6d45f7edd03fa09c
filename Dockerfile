# The contacts service image: one image for both processes.
#   api:    contacts api     (the default command)
#   worker: contacts worker
# Not built or run on the machine where this file was written (no Docker there).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# Only what the package needs; README.md is the package's long description.
COPY pyproject.toml README.md ./
COPY command/ command/
COPY query/ query/
COPY projections/ projections/
COPY events/ events/
COPY service/ service/
RUN pip install . \
    && useradd --system --create-home --uid 10001 contacts

USER contacts
WORKDIR /home/contacts
# CONTACTS_DATA_DIR must be writable: the CLI creates it on start, and it holds the
# embedded servers' data when no CONTACTS_DATABASE_URL / CONTACTS_NATS_URL is given.
ENV CONTACTS_HOST=0.0.0.0 \
    CONTACTS_PORT=8000 \
    CONTACTS_DATA_DIR=/home/contacts/data

EXPOSE 8000
CMD ["contacts", "api"]
