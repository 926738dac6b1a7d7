"""Zero-touch redirect services: telling Yealink's and Panasonic's redirect servers where a
factory-reset phone should fetch its configuration.

``base`` is the common interface and result type, one module per vendor implements it
(``yealink``, ``panasonic``), ``registry`` maps the service names in ``autoprov.vendor`` to them,
``jobs`` is the durable outbox in SQL, ``worker`` runs it and ``state`` is what operators see.
"""
