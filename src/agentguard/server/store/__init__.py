"""The server's only SQL layer: one module per resource, composed by :class:`SQLStore`.

``database`` and ``tables`` hold the engine and the schema, ``feed`` keeps each process's kill
indexes coherent with the database, and every other module reads and writes one resource.
"""
