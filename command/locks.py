"""The write side's PostgreSQL advisory lock keys (service/ and events/ keep their own).

Keys share one number space with service/locks.py and events/locks.py;
tests/unit/test_lock_keys.py checks that no key is taken twice across the layers.
"""

# Held shared by an import batch's transaction from its start (it writes read rows before the
# events table's lock, then waits for that lock: command/unit_of_work.py), alone by the
# rebuild's swap before it takes the events lock (projections/rebuild.py), which then waits
# for the batches in hand and holds the next ones off before they touch a read table.
WRITE_AHEAD = 724_007
