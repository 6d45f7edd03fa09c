"""PostgreSQL advisory lock keys, kept in one place so no two uses collide."""

SCHEMA = 724_001          # one process creates the read schema at a time (service/bootstrap.py)
WRITE_SCHEMA = 724_002    # one process creates the write-side tables at a time (command/recorder.py)
RELAY = 724_003           # one relay publishes at a time (events/relay.py)
EXPORT_EMAIL = 724_004    # with hashtext(account): one export-email quota check per account at a time
IMPORT_JOB = 724_005      # with hashtext(import id): held by the worker running that import job
ERASER = 724_006          # one eraser of purged contacts from NATS at a time (events/erasure.py)
