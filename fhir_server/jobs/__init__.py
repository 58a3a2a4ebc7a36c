"""Background work of the server process, fed by rows its writes committed (the outbox):
subscription delivery (``subscription_delivery``)."""
