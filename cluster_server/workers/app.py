"""The one Celery app both sides build: the server to send and collect, a worker to run.

Every setting here answers a known Celery trap (README, "Workers"): late acknowledgement and
rejection on a lost worker process (a task dies with its worker and is delivered again),
prefetch 1 (a busy worker holds no task another could run), a Redis visibility timeout longer
than any action (a slow action is not handed to a second worker while it runs), results kept
for days and always retried (an outcome outlives a server restart and a broker restart).
"""

import logging
import os
import time

from cluster_server.errors import ValidationError, WorkerError

LOG = logging.getLogger("shoal.workers")
TASK = "shoal.calls"
HOUR = 3600
CALLS_PER_MESSAGE = 8


def _seconds(name, default):
    value = os.environ.get(name, "")
    if not value:
        return default
    try:
        number = float(value)
    except ValueError:
        number = -1
    if number <= 0:
        raise ValidationError(f"{name} must be a number of seconds above 0, not {value!r}",
                              {"field": name, "reason": "not a duration"})
    return number


def visibility_timeout():
    """Seconds Redis lets a delivered, unacknowledged message stay with its worker before it
    hands it to another. Longer than the longest action (default 12 h): a worker process that
    dies is noticed by its parent and its task rejected at once (reject_on_worker_lost); only a
    whole machine lost waits this long for its tasks to move."""
    return _seconds("SHOAL_VISIBILITY_TIMEOUT", 12 * HOUR)


def result_expires():
    """Seconds an outcome stays in the result backend (default 7 days): longer than a server
    may be down and still expect to find what its workers finished meanwhile."""
    return _seconds("SHOAL_RESULT_EXPIRES", 7 * 24 * HOUR)


def calls_per_message():
    """The most calls one message carries (``SHOAL_CALLS_PER_MESSAGE``, default 8; the server's
    setting). The calls that became ready while the previous message was being sent go
    together: a message costs the server and a worker far more than a short call inside it
    (Kombu's delivery, unacknowledged record and acknowledgement; Celery's request; the
    publish), and sharing it is what lets 2 cores pass 1,000 calls a second. A worker makes a
    message's calls side by side, so none waits behind a long one; 8 keeps a burst spread over
    several workers. 1 sends every call alone."""
    value = os.environ.get("SHOAL_CALLS_PER_MESSAGE", "")
    if not value:
        return CALLS_PER_MESSAGE
    if not value.isdigit() or not 1 <= int(value) <= 100:
        raise ValidationError(f"SHOAL_CALLS_PER_MESSAGE must be a whole number from 1 to 100, "
                              f"not {value!r}", {"field": "SHOAL_CALLS_PER_MESSAGE",
                                                 "reason": "not a count"})
    return int(value)


def retrying(fn, where, stopped=lambda: False):
    """``fn()``, waiting out a broker that is down (restarted): the operation waits and goes
    on; nothing it sent is lost (Redis keeps queues and results on disk). ``where``: the broker
    as logs may show it (no password)."""
    delay = 0.1
    while True:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 (redis and kombu raise many kinds)
            if stopped():
                raise WorkerError(f"broker {where} unreachable: {exc}") from None
            LOG.warning("broker %s unreachable (%s); trying again in %.1f s", where, exc, delay)
            time.sleep(delay)
            delay = min(5.0, delay * 2)


def where(broker):
    """The broker's host, port and database: never a password (in logs, in the API)."""
    return broker.split("://", 1)[-1].split("@")[-1]


def make_app(broker):
    try:
        from celery import Celery
    except ImportError:
        raise ValidationError("the celery executor needs Celery: pip install 'shoal[celery]'",
                              {"field": "SHOAL_EXECUTOR", "reason": "celery not installed"}
                              ) from None
    if not broker.startswith(("redis://", "rediss://", "unix://")):
        raise ValidationError(f"the broker must be a Redis URL (redis://HOST:PORT/DB), not "
                              f"{broker!r}", {"field": "SHOAL_BROKER", "reason": "not redis"})
    timeout = visibility_timeout()
    transport = {"visibility_timeout": timeout}
    if timeout < 60:
        # Kombu looks for messages past their timeout every 10 x 10 s by default: with a short
        # timeout (tests of a lost machine), look every half timeout.
        transport.update(unacked_restore_interval=max(1, int(timeout / 2)),
                         unacked_restore_throttle=1)
    # Celery's Redis result backend storing a result in one round trip (results.py).
    app = Celery("shoal", broker=broker, backend="cluster_server.workers.results:Results+" + broker,
                 set_as_current=False)
    app.conf.update(
        task_serializer="json", result_serializer="json", accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # Off: the worker's claim says who took a call, in the same round trip (worker.py),
        # where Celery's STARTED would store and publish a state of its own.
        task_track_started=False,
        result_expires=result_expires(),
        result_backend_always_retry=True,  # a broker restart delays an outcome, never loses it
        result_backend_max_retries=10_000,
        broker_transport_options=transport,
        result_backend_transport_options=transport,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # a worker waits out a broker restart
        task_default_queue="shoal.default",
        task_create_missing_queues=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        worker_disable_rate_limits=True,
    )
    return app
