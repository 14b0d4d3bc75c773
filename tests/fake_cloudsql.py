"""A small fake of the Cloud SQL Admin REST API (v1), for tests: a real HTTP server on 127.0.0.1
speaking the real JSON shapes (``sql#instance``, ``sql#operation``, Google's error body).

It covers what Shoal uses: instances insert/get/list (with the ``field.path:value`` filter)
/delete and operations get. An instance is
PENDING_CREATE for ``polls`` reads, then RUNNABLE with a private address on the network its
``ipConfiguration.privateNetwork`` names (or FAILED, when a test says so); a deleted instance
is PENDING_DELETE for ``delete_polls`` reads, then gone. A second insert of a name answers 409
``instanceAlreadyExists``, as the real API does. Every insert body is kept for the test to
look at (it holds the root password: the test's one way to know it).
"""

import collections
import itertools
import json
import re
import threading
import time
import urllib.parse
import uuid

from tests.httpfake import LoopbackHTTP

NAME = re.compile(r"^[a-z]([-a-z0-9]{0,82}[a-z0-9])?$")


class HTTPError(Exception):
    def __init__(self, code, reason, message):
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def body(self):
        return {"error": {"code": self.code, "message": self.message,
                          "errors": [{"domain": "global", "reason": self.reason,
                                      "message": self.message}]}}


def _now():
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


class FakeCloudSQL(LoopbackHTTP):
    def __init__(self, project="shoal-test", polls=2, delete_polls=2):
        self.project = project
        self.polls = polls
        self.delete_polls = delete_polls
        self.lock = threading.RLock()
        self.instances = {}  # name -> instance (with private "_" keys)
        self.operations = {}
        self.inserted = []  # every accepted insert body, in order
        self.calls = collections.Counter()
        self.failing = set()  # names ("*": all) that end FAILED instead of RUNNABLE
        self.insert_delay = 0.0  # seconds to hold an insert's answer (after making it)
        self.addresses = itertools.count(3)
        super().__init__("fake-cloudsql")

    def link(self, path):
        return f"{self.url}/v1/projects/{self.project}/{path}"

    def leftovers(self):
        with self.lock:
            return sorted(self.instances)

    # -- dispatch --------------------------------------------------------------------------------

    def respond(self, method, path, headers, raw):
        status, body = self.handle(method, path, headers, raw)
        return status, [("Content-Type", "application/json; charset=UTF-8")], \
            json.dumps(body).encode()

    ROUTES = [
        ("GET", r"instances", "instance_list", "instances.list"),
        ("POST", r"instances", "instance_insert", "instances.insert"),
        ("GET", r"instances/([^/]+)", "instance_get", "instances.get"),
        ("DELETE", r"instances/([^/]+)", "instance_delete", "instances.delete"),
        ("GET", r"operations/([^/]+)", "operation_get", "operations.get"),
    ]

    def handle(self, method, path, headers, raw):
        url = urllib.parse.urlsplit(path)
        query = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
        try:
            if url.path == "/token" and method == "POST":
                return 200, {"access_token": "fake-sql-token", "expires_in": 3600,
                             "token_type": "Bearer"}
            if not headers.get("Authorization", headers.get("authorization", "")).startswith(
                    "Bearer "):
                raise HTTPError(401, "required", "Login Required.")
            prefix = f"/v1/projects/{self.project}/"
            if not url.path.startswith(prefix):
                raise HTTPError(404, "notFound", f"Not found: {url.path}")
            rest = url.path[len(prefix):]
            body = json.loads(raw) if raw else {}
            for verb, pattern, handler, name in self.ROUTES:
                match = re.fullmatch(pattern, rest)
                if verb == method and match:
                    self.calls[name] += 1
                    with self.lock:
                        result = getattr(self, handler)(*match.groups(), query=query, body=body)
                    if handler == "instance_insert" and self.insert_delay:
                        time.sleep(self.insert_delay)
                    return 200, result
            raise HTTPError(404, "notFound", f"Not found: {method} {rest}")
        except HTTPError as error:
            return error.code, error.body()

    # -- operations ------------------------------------------------------------------------------

    def _operation(self, kind, name, error=None):
        op_id = str(uuid.uuid4())
        op = {"kind": "sql#operation", "name": op_id, "operationType": kind, "status": "PENDING",
              "targetId": name, "targetProject": self.project,
              "targetLink": self.link(f"instances/{name}"),
              "selfLink": self.link(f"operations/{op_id}"), "insertTime": _now(),
              "user": "shoal-test@shoal-test.iam.gserviceaccount.com", "_reads": 0}
        if error:
            op["error"] = {"kind": "sql#operationErrors", "errors": [
                {"kind": "sql#operationError", "code": error[0], "message": error[1]}]}
        self.operations[op_id] = op
        return self._view(op)

    @staticmethod
    def _view(item):
        return {k: v for k, v in item.items() if not k.startswith("_")}

    def operation_get(self, op_id, query, body):
        op = self.operations.get(op_id)
        if op is None:
            raise HTTPError(404, "operationDoesNotExist", "The Cloud SQL operation does not "
                            "exist.")
        op["_reads"] += 1
        op["status"] = "RUNNING" if op["_reads"] == 1 else "DONE"
        if op["status"] == "DONE":
            op.setdefault("endTime", _now())
        return self._view(op)

    # -- instances -------------------------------------------------------------------------------

    def _observe(self, instance):
        """Move an instance along as it is read."""
        instance["_reads"] += 1
        if instance["state"] == "PENDING_DELETE":
            if instance["_reads"] > self.delete_polls:
                del self.instances[instance["name"]]
                return None
        elif instance["state"] == "PENDING_CREATE" and instance["_reads"] > self.polls:
            if instance["name"] in self.failing or "*" in self.failing:
                instance["state"] = "FAILED"
            else:
                instance["state"] = "RUNNABLE"
                instance["ipAddresses"] = [{"type": "PRIVATE",
                                            "ipAddress": f"10.20.0.{next(self.addresses)}"}]
        return instance

    def instance_insert(self, query, body):
        name = body.get("name", "")
        if not NAME.match(name):
            raise HTTPError(400, "invalid", f"Invalid request: instance name ({name}).")
        if not body.get("databaseVersion") or not (body.get("settings") or {}).get("tier"):
            raise HTTPError(400, "invalid", "Invalid request: databaseVersion and settings.tier "
                            "are required.")
        if name in self.instances:
            raise HTTPError(409, "instanceAlreadyExists", "The Cloud SQL instance already "
                            "exists.")
        ip = body["settings"].get("ipConfiguration") or {}
        if ip.get("ipv4Enabled") is False and not ip.get("privateNetwork"):
            raise HTTPError(400, "invalid", "Invalid request: at least one of public or "
                            "private IP must be enabled.")
        self.inserted.append(body)
        settings = {"kind": "sql#settings", "settingsVersion": "1", "tier": body["settings"][
            "tier"], "dataDiskSizeGb": str(body["settings"].get("dataDiskSizeGb", "10")),
            "userLabels": body["settings"].get("userLabels", {}), "ipConfiguration": ip,
            "activationPolicy": "ALWAYS", "availabilityType": "ZONAL"}
        region = body.get("region", "us-central1")
        self.instances[name] = {
            "kind": "sql#instance", "name": name, "project": self.project, "state":
            "PENDING_CREATE", "databaseVersion": body["databaseVersion"], "region": region,
            "gceZone": f"{region}-a", "backendType": "SECOND_GEN",
            "instanceType": "CLOUD_SQL_INSTANCE", "settings": settings, "ipAddresses": [],
            "connectionName": f"{self.project}:{region}:{name}", "createTime": _now(),
            "selfLink": self.link(f"instances/{name}"), "_reads": 0}
        return self._operation("CREATE", name)

    def instance_get(self, name, query, body):
        instance = self.instances.get(name)
        if instance is not None:
            instance = self._observe(instance)
        if instance is None:
            raise HTTPError(404, "instanceDoesNotExist", "The Cloud SQL instance does not "
                            "exist.")
        return self._view(instance)

    @staticmethod
    def _matches(instance, text):
        """The list filter's ``field.path:value`` terms (joined by spaces: AND)."""
        for term in (text or "").split():
            path, _, value = term.partition(":")
            current = instance
            for part in path.split("."):
                current = current.get(part) if isinstance(current, dict) else None
            if current is None or str(current).lower() != value.lower():
                return False
        return True

    def instance_list(self, query, body):
        size = min(500, int(query.get("maxResults") or 500))
        start = int(query.get("pageToken") or 0)
        names = sorted(n for n, i in self.instances.items()
                       if self._matches(i, query.get("filter")))
        items = []
        for name in names[start:start + size]:
            instance = self._observe(self.instances[name])
            if instance is not None:
                items.append(self._view(instance))
        page = {"kind": "sql#instancesList", "items": items}
        if start + size < len(names):
            page["nextPageToken"] = str(start + size)
        return page

    def instance_delete(self, name, query, body):
        instance = self.instances.get(name)
        if instance is None:
            raise HTTPError(404, "instanceDoesNotExist", "The Cloud SQL instance does not "
                            "exist.")
        if instance["state"] != "PENDING_DELETE":
            instance.update(state="PENDING_DELETE", _reads=0)
        return self._operation("DELETE", name)
