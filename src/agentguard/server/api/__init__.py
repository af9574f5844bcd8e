"""The HTTP API: one module per resource, all declared in :mod:`.endpoints`.

Each resource's handlers are a class built with what they use (the store, the key store, the
fleet, ...); :func:`.routes.build_routes` binds the declared endpoints to them.
"""
