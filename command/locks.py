"""The write side's PostgreSQL advisory lock keys (service/ and events/ keep their own).

Keys share one number space with service/locks.py and events/locks.py;
tests/unit/test_lock_keys.py checks that no key is taken twice across the layers.
"""

# Held shared by an import batch's transaction from its start (it writes read rows before the
# events table's lock, then waits for that lock: command/unit_of_work.py), alone by the
# rebuild's swap before it takes the events lock (projections/rebuild.py), which then waits
# for the batches in hand and holds the next ones off before they touch a read table.
WRITE_AHEAD = 724_007

# Held alone by every append of events, from before the insert to the commit (append_events in
# command/schema.sql, which names the number itself): writers take turns, so notification ids
# are in commit order. It replaced LOCK TABLE contacts_events IN EXCLUSIVE MODE, which also
# conflicts with the SHARE UPDATE EXCLUSIVE lock of (auto)VACUUM and ANALYZE: every autovacuum
# of the events table held every write back until it ended or PostgreSQL cancelled it after
# deadlock_timeout (1 s). The rebuild's swap and the start-up catch-up take it too, and the
# table's lock as well, which holds off a writer of an earlier version during a rolling upgrade.
EVENTS_APPEND = 724_009
