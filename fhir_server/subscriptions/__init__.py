"""Subscriptions: topic-based (the R5 Subscriptions Backport IG for R4) and classic R4
criteria subscriptions.

``topics`` reads SubscriptionTopics wrapped in Basic resources; ``plans`` turns a Subscription
resource into what the server acts on; ``index`` keeps the active subscriptions of the process
keyed by resource type and patient; ``feed`` is the write path's hook that admits
Subscription resources and records, in the write's own storage transaction, one event per
matching subscription (the outbox); ``notifications`` builds the notification Bundles;
``endpoints`` checks where a rest-hook may post. The delivery worker is
``fhir_server.jobs.subscription_delivery``. See docs/subscriptions.md.
"""
