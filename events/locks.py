"""The events layer's PostgreSQL advisory lock keys: one leader at a time for each NATS task (events/leader.py).

Keys share one number space with service/locks.py; tests/unit/test_lock_keys.py checks that no
key is taken twice across the layers.
"""

RELAY = 724_003           # one relay publishes at a time (events/relay.py)
ERASER = 724_006          # one eraser of purged contacts from NATS at a time (events/erasure.py)
