"""A small fake of the Google Compute Engine REST API, for tests: a real HTTP server on
127.0.0.1 speaking the real JSON shapes (``compute#instance``, ``compute#operation``, …).

It covers what Shoal uses: instances insert/get/list/aggregatedList/delete, firewalls
insert/get/list/delete, zone and global operations get, projects and zones get, and the OAuth
token endpoint a service-account key's ``token_uri`` points at. Instances go PROVISIONING →
STAGING → RUNNING over several reads (``polls_per_state`` each); deleting goes through STOPPING.
A repeated ``requestId`` returns the first operation. Faults a test can set: an insert refused
(HTTP 403 quota) or accepted and failed in its operation, an instance that ends TERMINATED, slow
state changes, a response held back after the change is made.
"""

import collections
import itertools
import json
import re
import threading
import time
import urllib.parse

from tests.httpfake import LoopbackHTTP

BASE = "/compute/v1/projects/"
NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


class HTTPError(Exception):
    def __init__(self, code, reason, message, status=None):
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message
        self.status = status

    def body(self):
        error = {"code": self.code, "message": self.message,
                 "errors": [{"message": self.message, "domain": "global", "reason": self.reason}]}
        if self.status:
            error["status"] = self.status
        return {"error": error}


def _now():
    return time.strftime("%Y-%m-%dT%H:%M:%S.000-00:00", time.gmtime())


def _matches(item, filter_text):
    """The subset of the list filter syntax Shoal sends: ``a.b = "v"`` terms joined by AND."""
    if not filter_text:
        return True
    for term in re.split(r"\s+AND\s+", filter_text.strip()):
        match = re.fullmatch(r'\(?\s*([\w.-]+)\s*(=|!=|eq|ne)\s*"?([^"]*?)"?\s*\)?', term.strip())
        if not match:
            raise HTTPError(400, "invalid", f"Invalid value for field 'filter': '{filter_text}'.")
        path, op, value = match.groups()
        current = item
        for part in path.split("."):
            current = current.get(part) if isinstance(current, dict) else None
        equal = str(current) == value if current is not None else False
        if equal != (op in ("=", "eq")):
            return False
    return True


class FakeGCE(LoopbackHTTP):
    def __init__(self, project="shoal-test", zones=("us-central1-a", "us-central1-b"),
                 polls_per_state=2, op_polls=1):
        self.project = project
        self.zones = list(zones)
        self.polls_per_state = polls_per_state
        self.op_polls = op_polls
        self.lock = threading.RLock()
        self.instances = {}  # (zone, name) -> instance
        self.firewalls = {}  # name -> firewall
        self.operations = {}  # name -> operation (with private "_" keys)
        self.request_ids = {}  # request id -> operation name
        self.calls = collections.Counter()  # "instances.list" -> calls
        self.tokens_issued = 0
        self.inserts = 0
        self.fail_insert = {}  # insert number -> "http" | "operation"
        self.fail_instance = {}  # insert number -> statusMessage (it ends TERMINATED)
        self.slow = {}  # insert number -> polls per state for that instance
        self.insert_delay = 0.0  # seconds to hold an insert's response (after making it)
        self.on_running = []  # fn(instance) when an instance first shows RUNNING
        self.ids = itertools.count(1000000001)
        super().__init__("fake-gce")

    def link(self, path):
        return f"{self.url}{BASE}{self.project}/{path}"

    # -- what tests look at ----------------------------------------------------------------------

    def leftovers(self, label=None):
        """Instances (with ``labels.shoal-cluster = label``, or any), firewalls named shoal-…"""
        with self.lock:
            instances = [i["name"] for i in self.instances.values()
                         if label is None or i.get("labels", {}).get("shoal-cluster") == label]
            firewalls = [f["name"] for f in self.firewalls.values()
                         if f["name"].startswith("shoal-")]
        return {"instances": sorted(instances), "firewalls": sorted(firewalls)}

    def ssh_keys(self):
        """Every ``ssh-keys`` metadata line of every instance."""
        lines = []
        with self.lock:
            for instance in self.instances.values():
                for item in instance.get("metadata", {}).get("items", []):
                    if item.get("key") == "ssh-keys":
                        lines += item["value"].splitlines()
        return lines

    # -- dispatch --------------------------------------------------------------------------------

    def respond(self, method, path, headers, raw):
        status, body = self.handle(method, path, headers, raw)
        data = json.dumps(body).encode()
        return status, [("Content-Type", "application/json; charset=UTF-8")], data

    def handle(self, method, path, headers, raw):
        url = urllib.parse.urlsplit(path)
        query = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
        try:
            if url.path == "/token" and method == "POST":
                return 200, self.token(raw)
            if not headers.get("Authorization", headers.get("authorization", "")).startswith(
                    "Bearer "):
                raise HTTPError(401, "required", "Request is missing required authentication "
                                "credential.", "UNAUTHENTICATED")
            if not url.path.startswith(BASE):
                raise HTTPError(404, "notFound", f"Not found: {url.path}")
            parts = url.path[len(BASE):].split("/")
            if parts[0] != self.project:
                raise HTTPError(404, "notFound", f"The resource 'projects/{parts[0]}' was not "
                                "found")
            body = json.loads(raw) if raw else {}
            with self.lock:
                result = self.route(method, parts[1:], query, body)
            if method == "POST" and parts[1:2] == ["zones"] and self.insert_delay:
                time.sleep(self.insert_delay)
            return 200, result
        except HTTPError as error:
            return error.code, error.body()

    ROUTES = [  # (method, path under the project, handler, name counted in ``calls``)
        ("GET", r"", "project_get", "projects.get"),
        ("GET", r"zones/([^/]+)", "zone_get", "zones.get"),
        ("POST", r"zones/([^/]+)/instances", "instance_insert", "instances.insert"),
        ("GET", r"zones/([^/]+)/instances", "instance_list", "instances.list"),
        ("GET", r"zones/([^/]+)/instances/([^/]+)", "instance_get", "instances.get"),
        ("DELETE", r"zones/([^/]+)/instances/([^/]+)", "instance_delete", "instances.delete"),
        ("GET", r"aggregated/instances", "instance_aggregated", "instances.aggregatedList"),
        ("GET", r"zones/([^/]+)/operations/([^/]+)", "operation_get", "zoneOperations.get"),
        ("GET", r"global/operations/([^/]+)", "operation_get", "globalOperations.get"),
        ("POST", r"global/firewalls", "firewall_insert", "firewalls.insert"),
        ("GET", r"global/firewalls", "firewall_list", "firewalls.list"),
        ("GET", r"global/firewalls/([^/]+)", "firewall_get", "firewalls.get"),
        ("DELETE", r"global/firewalls/([^/]+)", "firewall_delete", "firewalls.delete"),
    ]

    def route(self, method, parts, query, body):
        rest = "/".join(parts)
        for verb, pattern, handler, name in self.ROUTES:
            match = re.fullmatch(pattern, rest)
            if verb == method and match:
                self.calls[name] += 1
                return getattr(self, handler)(*match.groups(), query=query, body=body)
        raise HTTPError(404, "notFound", f"Not found: {method} {rest}")

    # -- auth, project, zone ---------------------------------------------------------------------

    def token(self, raw):
        form = urllib.parse.parse_qs(raw.decode())
        if "assertion" not in form:
            raise HTTPError(400, "invalid_grant", "missing assertion")
        self.tokens_issued += 1
        return {"access_token": f"fake-token-{self.tokens_issued}", "expires_in": 3600,
                "token_type": "Bearer"}

    def project_get(self, query, body):
        return {"kind": "compute#project", "id": "4242424242", "name": self.project,
                "creationTimestamp": _now(), "selfLink": f"{self.url}{BASE}{self.project}"}

    def _zone(self, zone):
        if zone not in self.zones:
            raise HTTPError(404, "notFound", f"The resource 'projects/{self.project}/zones/"
                            f"{zone}' was not found")

    def zone_get(self, zone, query, body):
        self._zone(zone)
        return {"kind": "compute#zone", "name": zone, "status": "UP",
                "region": self.link(f"regions/{zone.rsplit('-', 1)[0]}"),
                "selfLink": self.link(f"zones/{zone}")}

    # -- operations ------------------------------------------------------------------------------

    def _operation(self, kind, target, zone=None, request_id=None, error=None, on_done=None):
        if request_id and request_id in self.request_ids:
            return self._op_view(self.operations[self.request_ids[request_id]])
        name = f"operation-{int(time.time() * 1000)}-{next(self.ids)}"
        op = {"kind": "compute#operation", "id": str(next(self.ids)), "name": name,
              "operationType": kind, "targetLink": target, "targetId": str(next(self.ids)),
              "status": "RUNNING", "user": "shoal-test@example.com", "progress": 0,
              "insertTime": _now(), "startTime": _now(),
              "selfLink": self.link(f"zones/{zone}/operations/{name}" if zone
                                    else f"global/operations/{name}"),
              "_polls": 0, "_error": error, "_on_done": on_done}
        if zone:
            op["zone"] = self.link(f"zones/{zone}")
        if request_id:
            self.request_ids[request_id] = name
        self.operations[name] = op
        return self._op_view(op)

    def _op_view(self, op):
        return {k: v for k, v in op.items() if not k.startswith("_")}

    def _finish(self, op):
        op.update(status="DONE", progress=100, endTime=_now())
        if op["_error"]:
            op["error"] = {"errors": [op["_error"]]}
            op["httpErrorStatusCode"], op["httpErrorMessage"] = 403, "FORBIDDEN"
        if op["_on_done"]:
            op["_on_done"]()

    def operation_get(self, *args, query, body):
        name = args[-1]
        op = self.operations.get(name)
        if op is None:
            raise HTTPError(404, "notFound", f"The resource '{name}' was not found")
        if op["status"] != "DONE":
            op["_polls"] += 1
            if op["_polls"] > self.op_polls:
                self._finish(op)
        return self._op_view(op)

    # -- instances -------------------------------------------------------------------------------

    def _observe(self, instance):
        """Move an instance along as it is read; a read shows it, then it may move on."""
        instance["_seen"] += 1
        per_state = instance["_per_state"]
        if instance.get("_deleting"):
            if instance["_seen"] > per_state:
                del self.instances[(instance["_zone"], instance["name"])]
                return None
            return instance
        if instance["status"] in ("RUNNING", "TERMINATED"):
            return instance
        steps = ["PROVISIONING", "STAGING", instance["_end"]]
        status = steps[min(2, (instance["_seen"] - 1) // per_state)]
        if status != instance["status"]:
            instance["status"] = status
            if status == "TERMINATED":
                instance["statusMessage"] = instance["_message"]
            if status == "RUNNING":
                instance["lastStartTimestamp"] = _now()
                for hook in self.on_running:
                    hook(self._view(instance))
        return instance

    def _view(self, instance):
        return {k: v for k, v in instance.items() if not k.startswith("_")}

    def instance_insert(self, zone, query, body):
        self._zone(zone)
        request_id = query.get("requestId")
        if request_id in self.request_ids:
            return self._op_view(self.operations[self.request_ids[request_id]])
        name = body.get("name", "")
        if not NAME.match(name):
            raise HTTPError(400, "invalid", f"Invalid value for field 'resource.name': '{name}'.")
        for field in ("machineType", "disks", "networkInterfaces"):
            if not body.get(field):
                raise HTTPError(400, "required", f"Required field 'resource.{field}' not "
                                "specified")
        self._check_disks(body["disks"])
        if (zone, name) in self.instances:
            raise HTTPError(409, "alreadyExists", f"The resource 'projects/{self.project}/zones/"
                            f"{zone}/instances/{name}' already exists")
        self.inserts += 1
        number = self.inserts
        target = self.link(f"zones/{zone}/instances/{name}")
        fault = self.fail_insert.get(number)
        if fault == "http":
            raise HTTPError(403, "quotaExceeded", "Quota 'CPUS' exceeded.  Limit: 0.0 in region "
                            f"{zone.rsplit('-', 1)[0]}.", "PERMISSION_DENIED")
        if fault == "operation":
            return self._operation("insert", target, zone, request_id, error={
                "code": "ZONE_RESOURCE_POOL_EXHAUSTED",
                "message": f"The zone 'projects/{self.project}/zones/{zone}' does not have "
                           "enough resources available to fulfill the request."})
        n = number % 250
        instance = {
            "kind": "compute#instance", "id": str(next(self.ids)), "name": name,
            "creationTimestamp": _now(), "status": "PROVISIONING",
            "zone": self.link(f"zones/{zone}"),
            "machineType": body["machineType"] if body["machineType"].startswith("http")
            else self.link(body["machineType"]),
            "labels": body.get("labels", {}), "labelFingerprint": "42WmSpB8rSM=",
            "tags": {**body.get("tags", {}), "fingerprint": "42WmSpB8rSM="},
            "metadata": {"kind": "compute#metadata", "fingerprint": "8BkIzYqh6Xo=",
                         "items": body.get("metadata", {}).get("items", [])},
            "disks": self._attached(zone, name, body["disks"]),
            "networkInterfaces": [{
                "kind": "compute#networkInterface", "name": "nic0",
                "network": self.link(body["networkInterfaces"][0].get(
                    "network", "global/networks/default")),
                "networkIP": f"10.128.{number // 250}.{n + 2}",
                "accessConfigs": [{"kind": "compute#accessConfig", "type": "ONE_TO_ONE_NAT",
                                   "name": "External NAT",
                                   "natIP": f"34.70.{number // 250}.{n + 2}"}]}],
            "selfLink": self.link(f"zones/{zone}/instances/{name}"),
            "_zone": zone, "_seen": 0, "_end": "TERMINATED" if number in self.fail_instance
            else "RUNNING", "_message": self.fail_instance.get(number, ""),
            "_per_state": self.slow.get(number, self.polls_per_state),
        }
        self.instances[(zone, name)] = instance
        return self._operation("insert", target, zone, request_id)

    @staticmethod
    def _check_disks(disks):
        """The insert's disks as Compute checks them: the first and only the first is the boot
        disk, and each is made from ``initializeParams`` (an existing ``source`` disk is not
        something this fake holds)."""
        for index, disk in enumerate(disks):
            if bool(disk.get("boot")) != (index == 0):
                raise HTTPError(400, "invalid", "Invalid value for field 'resource.disks"
                                f"[{index}].boot': '{str(bool(disk.get('boot'))).lower()}'. "
                                "The boot disk must be the first disk, and the only one.")
            if "initializeParams" not in disk:
                raise HTTPError(400, "required", f"Required field 'resource.disks[{index}]."
                                "initializeParams' not specified")
            size = disk["initializeParams"].get("diskSizeGb")
            if size is not None and (not str(size).isdigit() or int(size) <= 0):
                raise HTTPError(400, "invalid", f"Invalid value for field 'resource.disks"
                                f"[{index}].initializeParams.diskSizeGb': '{size}'.")

    def _attached(self, zone, name, disks):
        """The instance's ``disks`` for the insert's: each a persistent disk made with it, named
        after the instance (the boot disk NAME, the others NAME-1, NAME-2, …) unless the request
        names it; sizes are strings (int64 in JSON), 10 GB when not given."""
        attached = []
        for index, disk in enumerate(disks):
            params = disk["initializeParams"]
            disk_name = params.get("diskName") or (name if index == 0 else f"{name}-{index}")
            attached.append({
                "kind": "compute#attachedDisk", "type": "PERSISTENT",
                "mode": disk.get("mode", "READ_WRITE"), "boot": index == 0,
                "autoDelete": bool(disk.get("autoDelete", False)),
                "deviceName": disk.get("deviceName") or f"persistent-disk-{index}",
                "index": index, "source": self.link(f"zones/{zone}/disks/{disk_name}"),
                "interface": "SCSI", "diskSizeGb": str(params.get("diskSizeGb", 10))})
        return attached

    def _instance(self, zone, name):
        self._zone(zone)
        instance = self.instances.get((zone, name))
        if instance is None:
            raise HTTPError(404, "notFound", f"The resource 'projects/{self.project}/zones/{zone}"
                            f"/instances/{name}' was not found")
        return instance

    def instance_get(self, zone, name, query, body):
        instance = self._observe(self._instance(zone, name))
        if instance is None:
            raise HTTPError(404, "notFound", f"The resource 'projects/{self.project}/zones/{zone}"
                            f"/instances/{name}' was not found")
        return self._view(instance)

    def _listed(self, zone, query):
        found = []
        for (z, _), instance in list(self.instances.items()):
            if z == zone and _matches(instance, query.get("filter")):
                instance = self._observe(instance)
                if instance is not None:
                    found.append(self._view(instance))
        return found

    def _page(self, items, query):
        size = min(500, int(query.get("maxResults") or 500))
        start = int(query.get("pageToken") or 0)
        page = {"items": items[start:start + size]}
        if start + size < len(items):
            page["nextPageToken"] = str(start + size)
        return page

    def instance_list(self, zone, query, body):
        self._zone(zone)
        size = min(500, int(query.get("maxResults") or 500))
        start = int(query.get("pageToken") or 0)
        # Only the page returned is read (and moves on), as a real list would.
        matching = [i for (z, _), i in sorted(self.instances.items())
                    if z == zone and _matches(i, query.get("filter"))]
        items = []
        for instance in matching[start:start + size]:
            instance = self._observe(instance)
            if instance is not None:
                items.append(self._view(instance))
        result = {"kind": "compute#instanceList", "id": f"projects/{self.project}/zones/{zone}/"
                  "instances", "items": items, "selfLink": self.link(f"zones/{zone}/instances")}
        if start + size < len(matching):
            result["nextPageToken"] = str(start + size)
        return result

    def instance_aggregated(self, query, body):
        items = {}
        for zone in self.zones:
            found = self._listed(zone, query)
            items[f"zones/{zone}"] = {"instances": found} if found else {"warning": {
                "code": "NO_RESULTS_ON_PAGE", "message": "There are no results for scope "
                f"'zones/{zone}' on this page.", "data": [{"key": "scope",
                                                          "value": f"zones/{zone}"}]}}
        return {"kind": "compute#instanceAggregatedList", "id": f"projects/{self.project}/"
                "aggregated/instances", "items": items,
                "selfLink": self.link("aggregated/instances")}

    def instance_delete(self, zone, name, query, body):
        request_id = query.get("requestId")
        if request_id in self.request_ids:
            return self._op_view(self.operations[self.request_ids[request_id]])
        instance = self._instance(zone, name)
        if not instance.get("_deleting"):
            instance.update(status="STOPPING", _deleting=True, _seen=0)
        key = (zone, name)
        return self._operation("delete", instance["selfLink"], zone, request_id,
                               on_done=lambda: self.instances.pop(key, None))

    # -- firewalls -------------------------------------------------------------------------------

    def firewall_insert(self, query, body):
        request_id = query.get("requestId")
        if request_id in self.request_ids:
            return self._op_view(self.operations[self.request_ids[request_id]])
        name = body.get("name", "")
        if not NAME.match(name):
            raise HTTPError(400, "invalid", f"Invalid value for field 'resource.name': '{name}'.")
        if name in self.firewalls:
            raise HTTPError(409, "alreadyExists", f"The resource 'projects/{self.project}/global"
                            f"/firewalls/{name}' already exists")
        if not body.get("sourceRanges") and not body.get("sourceTags"):
            raise HTTPError(400, "required", "Required field 'sourceRanges' not specified")
        self.firewalls[name] = {
            "kind": "compute#firewall", "id": str(next(self.ids)), "name": name,
            "creationTimestamp": _now(), "description": body.get("description", ""),
            "network": self.link(body.get("network", "global/networks/default")),
            "priority": body.get("priority", 1000), "direction": body.get("direction", "INGRESS"),
            "sourceRanges": body.get("sourceRanges", []), "targetTags": body.get("targetTags", []),
            "allowed": body.get("allowed", []), "disabled": False,
            "selfLink": self.link(f"global/firewalls/{name}")}
        return self._operation("insert", self.firewalls[name]["selfLink"], None, request_id)

    def firewall_list(self, query, body):
        items = [f for _, f in sorted(self.firewalls.items())
                 if _matches(f, query.get("filter"))]
        return {"kind": "compute#firewallList", "id": f"projects/{self.project}/global/"
                "firewalls", **self._page(items, query),
                "selfLink": self.link("global/firewalls")}

    def firewall_get(self, name, query, body):
        if name not in self.firewalls:
            raise HTTPError(404, "notFound", f"The resource 'projects/{self.project}/global/"
                            f"firewalls/{name}' was not found")
        return self.firewalls[name]

    def firewall_delete(self, name, query, body):
        request_id = query.get("requestId")
        if request_id in self.request_ids:
            return self._op_view(self.operations[self.request_ids[request_id]])
        firewall = self.firewall_get(name, query, body)
        del self.firewalls[name]
        return self._operation("delete", firewall["selfLink"], None, request_id)


#: The fake's "universe" (Google's name for a separate Cloud, like a sovereign one). Credentials
#: of the default universe would also ask iamcredentials.googleapis.com for their regional
#: access boundary, in the background: tests must reach nothing beyond loopback. Set
#: GOOGLE_CLOUD_UNIVERSE_DOMAIN to it wherever a client uses the fake's credentials.
UNIVERSE = "shoal-fake.test"


def service_account_file(directory, fake, name="shoal-test"):
    """A service-account key file for ``fake``: a real RSA key, its ``token_uri`` the fake's
    token endpoint, its universe UNIVERSE."""
    import os

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    email = f"{name}@{fake.project}.iam.gserviceaccount.com"
    data = {"type": "service_account", "project_id": fake.project,
            "private_key_id": "0123456789abcdef", "private_key": pem, "client_email": email,
            "client_id": "1234567890", "token_uri": f"{fake.url}/token",
            "auth_uri": f"{fake.url}/auth", "universe_domain": UNIVERSE}
    path = os.path.join(directory, f"{name}.json")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    return path
