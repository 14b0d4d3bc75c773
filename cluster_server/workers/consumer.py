"""The Celery consumer a Shoal worker runs: Celery's own, surviving its clean-up after a broker
restart."""

import logging

from celery.worker.consumer import Consumer as CeleryConsumer

LOG = logging.getLogger("shoal.worker")


class Consumer(CeleryConsumer):
    """When the connection to Redis breaks, Celery closes the dead connection; Kombu's Redis
    channel then tries to put its unacknowledged messages back through it and can raise
    AttributeError (its client already gone), which Celery took for an unrecoverable error:
    the worker exited (seen here in the broker-restart test, under load). The messages stay
    unacknowledged in Redis, where nothing delivers them again before the visibility timeout;
    the server sends their calls again (client.py), and the worker connects again as after
    any connection error."""

    def on_connection_error_after_connected(self, exc):
        try:
            super().on_connection_error_after_connected(exc)
        except Exception as error:  # noqa: BLE001 (any fault closing a dead connection)
            self.connection = None
            LOG.warning("closing the lost broker connection failed (%s: %s); connecting "
                        "again", type(error).__name__, error)
