"""Chaos runs: real ``emgd run`` processes against a PostgreSQL cluster the run owns, with
daemons killed, the server restarted and crashed, its disk filled, storage hung and daemons
frozen. ``python -m chaos`` runs every scenario and prints one JSON summary (docs/chaos.md)."""
