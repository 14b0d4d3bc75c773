"""``shoal cluster ...`` and ``shoal task ...``: plan, create and change clusters, follow their work."""

import json
import sys
import time

from cluster_cli import files, progress
from cluster_cli.client import ClientError, segment
from cluster_cli.v1.base import (ShoalCommand, ShoalLister, ShoalShowOne, add_limit,
                                 positive_int)

GROUP_COLUMNS = ("Count", "Services", "Hardware", "Image", "Cost")


def _names(value):
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _config(value):
    """--config: inline JSON, or @FILE with JSON or YAML."""
    if value is None:
        return None
    if not value.strip():
        raise ClientError("--config is empty")
    if value == "@":
        raise ClientError("--config @FILE needs a file name")
    data = files.load(value[1:]) if value.startswith("@") else _json(value)
    if not isinstance(data, dict):
        raise ClientError("--config must be a JSON object (or @FILE holding one)")
    return data


def _json(text):
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ClientError(f"--config is not valid JSON: {exc}") from None


def _group_rows(groups):
    return [(g["count"], ", ".join(g["services"]), g["hardwaretype"], g["imagetype"], g["cost"])
            for g in groups]


def add_layout_options(parser):
    parser.add_argument("--services", metavar="A,B",
                        help="services instead of the template's defaults (comma-separated)")
    parser.add_argument("--provider", help="provider instead of the template's default")
    parser.add_argument("--hardwaretype", help="hardware type for every node")
    parser.add_argument("--imagetype", help="image type for every node")
    parser.add_argument("--config", metavar="JSON|@FILE",
                        help="config merged over the template's defaults")


def layout_request(parsed_args):
    request = {"template": parsed_args.template, "size": parsed_args.size}
    for key in ("provider", "hardwaretype", "imagetype"):
        if getattr(parsed_args, key):
            request[key] = getattr(parsed_args, key)
    if parsed_args.services:
        request["services"] = _names(parsed_args.services)
    config = _config(parsed_args.config)
    if config is not None:
        request["config"] = config
    return request


class _Operation(ShoalCommand):
    """Base of the commands that start an operation: ``--wait`` follows it.

    A subclass with a ``verb`` posts ``body()`` to ``/clusters/NAME/<verb>``.
    """

    verb = ""

    def body(self, parsed_args):
        return {}

    def take_action(self, parsed_args):
        result = self.submit(parsed_args, self.verb, lambda: self.client.post(
            f"/clusters/{segment(parsed_args.name)}/{self.verb}", self.body(parsed_args)))
        self.started(parsed_args, result, parsed_args.name)

    def submit(self, parsed_args, verb, send):
        """``send()``'s answer; with --wait the line moves from the start, while the server
        plans and stores the operation."""
        if not getattr(parsed_args, "wait", False):
            return send()
        with progress.preparing(f"{verb} {parsed_args.name}: planning"):
            return send()

    def add_wait(self, parser):
        parser.add_argument("--wait", action="store_true",
                            help="follow the operation with live progress on stderr; exit "
                                 "non-zero if it fails")
        return parser

    def started(self, parsed_args, result, name):
        op_id = result["operation"]
        self.app.stdout.write(f"{op_id}\n")
        if parsed_args.wait:
            progress.wait(self.client, op_id)
        else:
            self.warn(f"operation {op_id} started on cluster {name}; follow it with "
                      f"'shoal cluster events {name}'")


def _counts(counts):
    return ", ".join(f"{name} {count}" for name, count in counts.items())


def expiry(at):
    """When a lease ends, in UTC, or 'never'."""
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(at)) if at else "never"


class ExtendLease(ShoalShowOne):
    """Extend a cluster's lease (within its template's step and max; admins may pass max)."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("name", metavar="NAME")
        parser.add_argument("--by", required=True, metavar="DURATION",
                            help="time to add, e.g. 2h, 1d, or milliseconds")
        return parser

    def take_action(self, parsed_args):
        lease = self.client.post(f"/clusters/{segment(parsed_args.name)}/extend",
                                 {"by": parsed_args.by})
        return self.show_dict({"name": lease["name"], "expires": expiry(lease["expires_at"])},
                              parsed_args)


class PlanCluster(ShoalLister):
    """Show the layout and the tasks an operation would run, without running anything.

    By default the node groups and the task counts by action; --tasks lists every task."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("name", metavar="NAME", nargs="?",
                            help="an existing cluster (with --operation); omit to plan a new one")
        parser.add_argument("--template", help="template of a new cluster")
        parser.add_argument("--size", type=int, help="number of nodes")
        parser.add_argument("--operation", choices=("resize", "add-services", "remove-services",
                                                    "start", "stop", "restart", "reconfigure",
                                                    "delete"),
                            help="what to plan on the existing cluster NAME")
        parser.add_argument("--restart", action="store_true", help="with reconfigure")
        parser.add_argument("--tasks", "--full", dest="full", action="store_true",
                            help="list every task (with -f json: the whole plan, every node "
                                 "and task, as the server streams it)")
        add_layout_options(parser)
        return parser

    def request(self, parsed_args):
        if parsed_args.name:
            if not parsed_args.operation:
                raise ClientError("give --operation to plan a change of an existing cluster")
            body = {"operation": parsed_args.operation}
            if parsed_args.size is not None:
                body["size"] = parsed_args.size
            if parsed_args.services:
                body["services"] = _names(parsed_args.services)
            if parsed_args.restart:
                body["restart"] = True
            return f"/clusters/{segment(parsed_args.name)}/plan", body
        if not parsed_args.template or parsed_args.size is None:
            raise ClientError("give --template and --size to plan a new cluster")
        return "/clusters/plan", layout_request(parsed_args)

    def take_action(self, parsed_args):
        path, body = self.request(parsed_args)
        self.result = None
        if parsed_args.full and parsed_args.formatter == "json":
            # 40,000 tasks at 10,000 nodes: copied through as they come, never parsed here.
            self.app.stdout.flush()
            out = getattr(self.app.stdout, "buffer", None) or sys.stdout.buffer
            self.client.post(path, body, sink=out, full=1)
            out.flush()
            return (), []
        result = self.client.post(path, body, full=1 if parsed_args.full else None)
        self.result = result
        summary = result["summary"]
        line = f"{summary['tasks']} tasks: {_counts(summary['actions']) or 'none'}"
        if "layout" in result:
            layout = result["layout"]
            changes = ""
            if parsed_args.name:
                changes = (f"; adds {layout['added']} node(s), removes "
                           f"{', '.join(layout['removed']) or 'none'}, changes "
                           f"{', '.join(layout['changed']) or 'none'}")
            line = (f"{summary['nodes']} nodes on {layout['provider']}, total cost "
                    f"{layout['cost']:g}{changes}; {line}")
        self.warn(line)
        if parsed_args.full:
            return ("Node", "Action", "Service"), [(t["node"], t["action"], t["service"] or "")
                                                  for t in result["tasks"]
                                                  if t["action"] != "JOIN"]
        if "layout" in result:
            return GROUP_COLUMNS, _group_rows(result["groups"])
        return ("Action", "Tasks"), list(summary["actions"].items())

    def produce_output(self, parsed_args, column_names, data):
        if parsed_args.formatter == "json":  # the whole answer, not just the table
            if self.result is not None:
                self.app.stdout.write(json.dumps(self.result, indent=2) + "\n")
            return 0
        return super().produce_output(parsed_args, column_names, data)


class CreateCluster(_Operation):
    """Create a cluster from a template: solve the layout, make the nodes, start the services."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("name", metavar="NAME", help="name of the new cluster")
        parser.add_argument("--template", required=True, help="cluster template")
        parser.add_argument("--size", type=int, required=True, help="number of nodes")
        parser.add_argument("--keep-on-failure", action="store_true",
                            help="on failure keep what was made, for debugging (no rollback)")
        parser.add_argument("--lease", metavar="DURATION",
                            help="a shorter lease than the template's (e.g. 4h, 2d); the "
                                 "cluster is deleted when it runs out")
        add_layout_options(parser)
        return self.add_wait(parser)

    def take_action(self, parsed_args):
        body = dict(layout_request(parsed_args), name=parsed_args.name)
        if parsed_args.keep_on_failure:
            body["keep_on_failure"] = True
        if parsed_args.lease:
            body["lease"] = parsed_args.lease
        result = self.submit(parsed_args, "create", lambda: self.client.post("/clusters", body))
        self.warn(f"cluster {parsed_args.name}: {len(result['layout']['nodes'])} nodes, "
                  f"{result['tasks']} tasks")
        self.started(parsed_args, result, parsed_args.name)


class ListClusters(ShoalLister):
    """List clusters."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("--all", action="store_true", help="include deleted clusters")
        return parser

    def take_action(self, parsed_args):
        rows = self.client.get("/clusters", all="1" if parsed_args.all else None)
        return (("Name", "Status", "Health", "Template", "Provider", "Nodes", "Owner",
                 "Expires"),
                [(r["name"], r["status"], r["health"] + (" DRIFTED" if r["drifted"] else ""),
                  r["template"], r["provider"], r["nodes"], r["owner"], expiry(r["expires_at"]))
                 for r in rows])



def _metrics(metrics):
    """`` (load 0.12, mem 41%, disk 63%)`` from a node's facts, or nothing."""
    if not metrics:
        return ""
    parts = []
    for key, label, fmt in (("load1", "load", "{:g}"), ("memory_pct", "mem", "{:g}%"),
                            ("disk_pct", "disk", "{:g}%")):
        if key in metrics:
            parts.append(f"{label} {fmt.format(metrics[key])}")
    return f" ({', '.join(parts)})" if parts else ""


class ShowCluster(ShoalShowOne):
    """Show a cluster: status, nodes with addresses and services, links."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("name", metavar="NAME")
        add_limit(parser, "nodes")
        return parser

    def take_action(self, parsed_args):
        limit = parsed_args.limit
        cluster = self.client.get(f"/clusters/{segment(parsed_args.name)}",
                                  limit=limit if 0 < limit <= 10_000 else None)
        del cluster["next"]
        if len(cluster["nodes"]) < cluster["size"]:
            self.warn(f"showing {len(cluster['nodes'])} of {cluster['size']} nodes "
                      "(--limit 0 shows all)")
        if parsed_args.formatter in ("json", "yaml"):
            return self.show_dict(cluster, parsed_args)
        nodes = "\n".join(f"{n['id']} {n['hostname']} {n['address'] or '-'} {n['status']}: "
                          f"{', '.join(n['services']) or '-'}{_metrics(n.get('metrics'))}"
                          for n in cluster["nodes"])
        drift = cluster.get("drift") or {}
        links = "\n".join(f"{link['label']}: {link['url']}" for link in cluster["links"])
        resources = "\n".join(
            f"{r['name']} {r['type']} {r['status']}: "
            f"{r['endpoint'] + ':' + str(r['port']) if r['endpoint'] else '-'}"
            for r in cluster.get("resources", []))
        op = cluster["operation"] or {}
        return self.show_dict({
            "name": cluster["name"], "status": cluster["status"],
            "health": (cluster["health"] + (f": {cluster['health_reason']}"
                                            if cluster["health_reason"] else "")),
            "drift": ("DRIFTED" if drift.get("drifted") else "none" if drift else "not checked"),
            "template": cluster["template"], "provider": cluster["provider"],
            "owner": cluster["owner"], "expires": expiry(cluster["expires_at"]),
            "size": cluster["size"], "services": ", ".join(cluster["services"]),
            "node_counts": _counts(cluster["node_counts"]), "nodes": nodes, "resources": resources,
            "links": links,
            "operation": f"{op.get('kind', '')} {op.get('status', '')} {op.get('id', '')}".strip(),
            "error": op.get("error") or "",
        }, parsed_args)


class DeleteCluster(_Operation):
    """Delete a cluster: stop and remove its services, delete every node."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("name", metavar="NAME")
        return self.add_wait(parser)

    def take_action(self, parsed_args):
        result = self.submit(parsed_args, "delete", lambda: self.client.delete(
            f"/clusters/{segment(parsed_args.name)}"))
        self.started(parsed_args, result, parsed_args.name)


class ResizeCluster(_Operation):
    """Grow or shrink a cluster to a new number of nodes."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("name", metavar="NAME")
        parser.add_argument("--size", type=int, required=True, help="the new number of nodes")
        return self.add_wait(parser)

    def take_action(self, parsed_args):
        result = self.submit(parsed_args, "resize", lambda: self.client.post(
            f"/clusters/{segment(parsed_args.name)}/resize", {"size": parsed_args.size}))
        layout = result["layout"]
        self.warn(f"adds {layout['added']} node(s), removes {len(layout['removed'])}")
        self.started(parsed_args, result, parsed_args.name)


class _ServicesChange(_Operation):
    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("name", metavar="NAME")
        parser.add_argument("services", metavar="SERVICE", nargs="+")
        return self.add_wait(parser)

    def body(self, parsed_args):
        return {"services": parsed_args.services}


class AddServices(_ServicesChange):
    """Add services to a cluster (nodes are added only if the constraints need them)."""

    verb = "add-services"


class RemoveServices(_ServicesChange):
    """Stop and remove services from a cluster."""

    verb = "remove-services"


class _ServiceControl(_Operation):
    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("name", metavar="NAME")
        parser.add_argument("--service", action="append", dest="services", metavar="SERVICE",
                            help="only this service (repeat for more); what it depends on, or "
                                 "what depends on it, comes along")
        return self.add_wait(parser)

    def body(self, parsed_args):
        return {"services": parsed_args.services} if parsed_args.services else {}


class StartCluster(_ServiceControl):
    """Start a cluster's services, in dependency order."""

    verb = "start"


class StopCluster(_ServiceControl):
    """Stop a cluster's services, dependents first."""

    verb = "stop"


class RestartCluster(_ServiceControl):
    """Restart a cluster's services."""

    verb = "restart"


class ReconfigureCluster(_ServiceControl):
    """Push new config to a cluster's services and apply it (--restart to restart them)."""

    verb = "reconfigure"

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("--config", metavar="JSON|@FILE",
                            help="config merged over the cluster's current config")
        parser.add_argument("--restart", action="store_true",
                            help="restart the services after configuring them")
        return parser

    def body(self, parsed_args):
        body = super().body(parsed_args)
        config = _config(parsed_args.config)
        if config is not None:
            body["config"] = config
        if parsed_args.restart:
            body["restart"] = True
        return body


class _Control(ShoalCommand):
    verb = ""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("name", metavar="NAME")
        return parser

    def take_action(self, parsed_args):
        result = self.client.post(f"/clusters/{segment(parsed_args.name)}/{self.verb}")
        self.app.stdout.write(f"{self.verb} requested for operation {result['operation']}\n")


class CancelCluster(_Control):
    """Cancel the running operation (a create is rolled back)."""

    verb = "cancel"


class PauseCluster(_Control):
    """Pause the running operation: running tasks finish, no new ones start."""

    verb = "pause"


class ResumeCluster(_Control):
    """Resume a paused operation."""

    verb = "resume"


class RetryCluster(_Operation):
    """Retry the failed operation of an INCONSISTENT cluster from where it failed."""

    verb = "retry"

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("name", metavar="NAME")
        return self.add_wait(parser)


class ClusterEvents(ShoalCommand):
    """Print a cluster's events; --follow streams them live until the operation ends."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("name", metavar="NAME")
        parser.add_argument("--follow", action="store_true",
                            help="keep printing new events while an operation runs")
        return parser

    def take_action(self, parsed_args):
        after = 0
        while True:
            result = self.client.get(f"/clusters/{segment(parsed_args.name)}/events", after=after,
                                     wait=10 if parsed_args.follow and after else None)
            for event in result["events"]:
                stamp = time.strftime("%H:%M:%S", time.localtime(event["at"]))
                self.app.stdout.write(f"{stamp} {event['message']}\n")
                after = event["id"]
            self.app.stdout.flush()
            if not parsed_args.follow or (result["status"] in ("ACTIVE", "FAILED", "DELETED",
                                                               "INCONSISTENT")
                                          and not result["events"]):
                return


class ListTasks(ShoalLister):
    """List the tasks of a cluster's latest operation: status, attempts, duration, worker."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("cluster", metavar="CLUSTER")
        parser.add_argument("--operation", help="another operation of the cluster")
        add_limit(parser, "tasks")
        return parser

    def take_action(self, parsed_args):
        rows, more = self.client.pages(f"/clusters/{segment(parsed_args.cluster)}/tasks",
                                       limit=parsed_args.limit or None,
                                       operation=parsed_args.operation)
        if rows:
            # The summary first: the operation's counts by status, from its own record.
            op = self.client.get(f"/operations/{segment(rows[0]['operation'])}")
            self.warn(f"{op['id']} {op['kind']} {op['status'].lower()}: {op['total']} tasks: "
                      f"{_counts(op['counts'])}"
                      + (f"; showing the first {len(rows)} (--limit 0 shows all)" if more else ""))
        return (("ID", "Node", "Action", "Service", "Status", "Attempts", "Duration", "Worker"),
                [(t["id"], t["node"], t["action"], t["service"] or "", t["status"],
                  t["attempts"], t["duration"] if t["duration"] is not None else "",
                  t.get("worker") or (f"(queued on {t['queue']})" if t["status"] == "QUEUED"
                                      else ""))
                 for t in rows if t["action"] != "JOIN"])


class ShowTask(ShoalShowOne):
    """Show one task with the tail of its output."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("id", metavar="ID")
        parser.add_argument("--lines", type=positive_int, default=40,
                            help="output lines to show")
        return parser

    def take_action(self, parsed_args):
        task = self.client.get(f"/tasks/{segment(parsed_args.id)}")
        task["output"] = "\n".join(task["output"].splitlines()[-parsed_args.lines:])
        return self.show_dict(task, parsed_args)

