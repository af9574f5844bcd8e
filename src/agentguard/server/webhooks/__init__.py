"""Webhooks: events (:mod:`.events`), their wire formats (:mod:`.formats`), where they may
be sent (:mod:`.addresses`) and the sender that delivers the outbox (:mod:`.sender`).

The tables and the outbox queries are in :mod:`agentguard.server.store.webhooks`, the HTTP
API in :mod:`agentguard.server.api.webhooks`. This package imports nothing on purpose: the
store imports :mod:`.events` while the sender imports the store.
"""
