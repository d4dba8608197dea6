"""FHIR Subscriptions, the core's part (issue 31): Subscription resources read into
compiled predicates (:mod:`criteria`), the topics served (:mod:`topics`) and the cache of
active subscriptions matched in a write's unit (:mod:`registry`). The notifier, the
outbox and the channels are the adapter's (``adapters/subscriptions``)."""
