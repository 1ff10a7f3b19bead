"""The system's vocabulary and plumbing: events, commands, subjects, streams, broker and database.

Read ``events/`` and ``commands/`` to learn what the system does; ``streams.py`` says where each
message travels; ``broker.py``, ``db.py`` and ``messaging.py`` are the plumbing every service shares.
"""
