"""The one exception hierarchy of Shoal.

Every error the core raises is a ShoalError. The API turns it into the one JSON error shape
``{"error": {"code", "message", "details"}}`` with ``status``; the CLI prints ``message``.
"""


class ShoalError(Exception):
    """Base of every error Shoal raises on purpose."""

    code = "error"
    status = 500

    def __init__(self, message, details=None):
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def to_dict(self):
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class ValidationError(ShoalError):
    """Bad input: names the entity, the field path and the reason in ``details``."""

    code = "invalid"
    status = 400


class Unprocessable(ValidationError):
    """Input that fits the API's contract but cannot be used: an archive that is none, a service
    not on the cluster, no credentials to check. 422, so a client tells it from a request that
    is malformed (400)."""

    status = 422


class TooLarge(ValidationError):
    """A request body or an upload over its size limit."""

    code = "too_large"
    status = 413


class Unauthorized(ShoalError):
    code = "unauthorized"
    status = 401


class Forbidden(ShoalError):
    """Understood, and never allowed: the contents of a key, for one."""

    code = "forbidden"
    status = 403


class NotFound(ShoalError):
    code = "not_found"
    status = 404


class Conflict(ShoalError):
    """The request clashes with current state (a name in use, an operation running)."""

    code = "conflict"
    status = 409


class StoreKeyError(ShoalError):
    """The key that seals the store's secrets is missing, damaged or not the one they were
    sealed with: nothing can be read until the right key is restored."""

    code = "store_key"
    status = 500


class LayoutError(ShoalError):
    """No layout satisfies the template, the size and the overrides; the message says why."""

    code = "no_layout"
    status = 422


class PlanError(ShoalError):
    """An operation cannot be planned (dependency cycle, missing entity, missing plugin)."""

    code = "plan_failed"
    status = 422


class PluginError(ShoalError):
    """A provider or automator type is not installed, or a plugin is misconfigured."""

    code = "plugin"
    status = 422


class ProviderError(ShoalError):
    """A provider failed to create, confirm or delete a node."""

    code = "provider"
    status = 502


class AutomatorError(ShoalError):
    """An automator could not run a service action (not: the action exited non-zero)."""

    code = "automator"
    status = 502


class TransportError(ShoalError):
    """A node could not be reached (SSH refused, host key changed, container gone)."""

    code = "transport"
    status = 502


class WorkerError(ShoalError):
    """The Celery executor could not reach its broker or its workers, or a worker failed."""

    code = "worker"
    status = 503
