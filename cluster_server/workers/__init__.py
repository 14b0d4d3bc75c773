"""Provisioner workers on other machines, through Celery (the ``celery`` extra).

The server stays the only writer of its store and the keeper of every operation: the Celery
dispatch (``dispatch``) sends each plugin call of a task (a provider's create, describe, delete;
an automator's action through the node's transport; a managed database's create, describe,
delete, find, release), in a message with the other calls ready at that moment, with the inputs
the server prepared (macros expanded, the provider's entry without its secrets), to the queue of
the cluster's tenant; a worker (``worker``) makes the call with its own credentials and sends
the outcome back through the result backend, where the server collects it (``client``).
"""

import re

PREFIX = "shoal"
QUEUE_RE = re.compile(r"[A-Za-z0-9_.:-]{1,200}")


def queue_for(tenant, provider=None, provider_queues=()):
    """The queue a task of ``tenant``'s cluster on ``provider`` goes to: ``shoal.<tenant>``, or
    ``shoal.<tenant>.<provider>`` for a provider listed in SHOAL_PROVIDER_QUEUES (a worker inside
    a private network serves only that provider)."""
    queue = f"{PREFIX}.{tenant or 'default'}"
    if provider and provider in provider_queues:
        queue += f".{provider}"
    return queue
