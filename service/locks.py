"""The service layer's PostgreSQL advisory lock keys (events/ keeps its own in events/locks.py).

Keys share one number space with events/locks.py and command/locks.py: 724_001-724_008,
each used once (724_002 was the write schema's, retired with it). tests/unit/test_lock_keys.py
checks that no key is taken twice across the layers.
"""

SCHEMA = 724_001          # one process creates the schema at a time (service/bootstrap.py, service/schema.py)
EXPORT_EMAIL = 724_004    # with hashtext(account): one export-email quota check per account at a time
IMPORT_JOB = 724_005      # with hashtext(import id): held by the worker, or the request, running that import job
GIN_PENDING_LISTS = 724_008  # one worker merges the read tables' GIN pending lists (service/pending_lists.py)
