"""FHIR Subscriptions, the adapter's part (issue 31): the notifier matching each write in
its unit and keeping notifications in the outbox (:mod:`outbox`), the rest-hook sender
(:mod:`sender`), the websocket endpoint (:mod:`web`), the operations (:mod:`operations`)
and the endpoint policy (:mod:`endpoints`). ADR 0024."""
