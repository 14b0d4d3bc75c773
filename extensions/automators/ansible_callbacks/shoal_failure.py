"""Ansible callback plugin (loaded by ansible-playbook, not by Shoal): writes each failed or
unreachable task's name, host and message as JSON to $SHOAL_ANSIBLE_RESULT, so the ``ansible``
automator can end a failed task's output with them."""

import json
import os

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
    name: shoal_failure
    type: aggregate
    short_description: records failed tasks for Shoal
    description: Writes the failing task's name, host and message to $SHOAL_ANSIBLE_RESULT.
"""

FIELDS = ("msg", "stderr", "reason", "module_stderr", "stdout")


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "shoal_failure"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self.failures = []

    def _record(self, result, state):
        data = getattr(result, "result", None)
        if not isinstance(data, dict):
            data = getattr(result, "_result", {}) or {}
        message = next((str(data[k]).strip() for k in FIELDS if data.get(k)), "") or \
            json.dumps({k: v for k, v in data.items() if not k.startswith("_")}, default=str)
        task = getattr(result, "task", None) or getattr(result, "_task", None)
        host = getattr(result, "host", None) or getattr(result, "_host", None)
        self.failures.append({"task": task.get_name() if task else "?", "state": state,
                              "host": host.get_name() if host else "?", "message": message})
        path = os.environ.get("SHOAL_ANSIBLE_RESULT")
        if path:
            with open(path, "w") as f:
                json.dump(self.failures, f)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        if not ignore_errors:
            self._record(result, "failed")

    def v2_runner_on_unreachable(self, result):
        self._record(result, "unreachable")
