"""The ``fake`` automator: logs every action to ``SHOAL_HOME/fake-automator.log``, on request
sleeps, fails, or fails the first N attempts of an action on a node.

Each action writes a ``begin`` line before it does anything and an ``end`` line after, so a test
can check that one action finished before another began. Fields of a service action:

* ``sleep``: seconds the action takes.
* ``fail``: true / "true": the action always fails (exit code 1).
* ``fail_times``: the first N attempts of this action of this service on this node fail
  (attempts are counted in ``SHOAL_HOME/fake-automator-attempts.json``, and logged as
  ``attempt``; 0 when not counted).
* ``fail_if_exists``: a path (relative to SHOAL_HOME); the action fails while it exists.
* ``hold_while_exists``: a path (relative to SHOAL_HOME); the action waits while it exists, so
  a test can hold many operations in flight at once and see them there.
* ``command``: an argv list run on the node through the transport; its result is the action's.
"""

import json
import os
import time

from cluster_server.plugins import ActionResult, Automator, Field

from shoal_testkit import cloud



def _true(value):
    return value is True or str(value).strip().lower() in ("true", "1", "yes")


class FakeAutomator(Automator):
    fields = {
        "sleep": Field(default=0, help="seconds the action takes"),
        "fail": Field(default=False, help="true: the action fails"),
        "fail_times": Field(default=0, help="the first N attempts on a node fail"),
        "fail_if_exists": Field(help="fail while this file (under SHOAL_HOME) exists"),
        "hold_while_exists": Field(help="wait while this file (under SHOAL_HOME) exists"),
        "command": Field(help="argv run on the node through the transport"),
    }

    def log(self, **entry):
        line = json.dumps({"at": time.time(), "pid": os.getpid(), **entry}, sort_keys=True)
        path = os.path.join(os.fspath(self.home), cloud.LOG_FILE)
        # One O_APPEND write per line needs no lock of ours: the kernel appends each write
        # whole. A lock held across the three system calls made every thread queue for it
        # while its holder waited to get the interpreter back after each call: at 32 worker
        # threads the log allowed about 33 actions a second.
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)

    def run(self, action, service, fields, context, transport):
        cluster, node = context.get("cluster_id", ""), context.get("node_id", "")
        attempt, fail_times = 0, int(fields.get("fail_times") or 0)
        if fail_times:  # counted only when asked: one file shared by every action
            key = f"{cluster}/{node}/{service}/{action}"
            with cloud.locked(self.home, cloud.ATTEMPTS_FILE, dict) as attempts:
                attempts[key] = attempt = attempts.get(key, 0) + 1
        where = {"cluster": cluster, "cluster_name": context.get("cluster_name", ""),
                 "node": node, "service": service, "action": action, "attempt": attempt}
        self.log(event="begin", fields=fields, config=context.get("config", {}), **where)
        time.sleep(float(fields.get("sleep") or 0))
        hold = fields.get("hold_while_exists")
        while hold and os.path.exists(os.path.join(os.fspath(self.home), hold)):
            time.sleep(0.02)
        reason = ""
        if _true(fields.get("fail")):
            reason = "injected failure (fail=true)"
        elif fail_times and attempt <= fail_times:
            reason = f"injected failure (attempt {attempt} of {fail_times} that fail)"
        elif fields.get("fail_if_exists") and os.path.exists(
                os.path.join(os.fspath(self.home), fields["fail_if_exists"])):
            reason = f"injected failure ({fields['fail_if_exists']} exists)"
        if reason:
            result = ActionResult(1, "", f"{action} {service} on {node}: {reason}\n")
        elif fields.get("command"):
            result = transport.run(fields["command"])
        else:
            result = ActionResult(0, f"{action} {service} on {node}: ok\n")
        self.log(event="end", ok=result.exit_code == 0, **where)
        return result
