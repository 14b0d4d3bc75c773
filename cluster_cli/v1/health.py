"""``shoal cluster health`` and ``shoal cluster check``: service health and drift."""

import sys
import time

from cluster_cli.client import ClientError, segment
from cluster_cli.v1.base import ShoalLister
from cluster_cli.v1.cluster import _Operation


def _when(stamp):
    return time.strftime("%H:%M:%S", time.localtime(stamp)) if stamp else ""


class ClusterHealth(ShoalLister):
    """Show the health of a cluster's services: one row per node and service."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("name", metavar="NAME")
        return parser

    def take_action(self, parsed_args):
        rows = self.client.get(f"/clusters/{segment(parsed_args.name)}/health")
        if parsed_args.formatter in ("json", "yaml"):
            return (("node", "service", "state", "since", "output", "restarts"),
                    [(r["node"], r["service"], r["state"], r["since"], r["output"],
                      r["restarts"]) for r in rows])
        return (("Node", "Service", "State", "Since", "Restarts", "Output"),
                [(r["node"], r["service"], r["state"] + (" (supervision stopped)"
                                                         if r["supervision"] else ""),
                  _when(r["since"]), r["restarts"],
                  (r["output"].strip().splitlines() or [""])[-1][:60]) for r in rows])


class CheckCluster(_Operation):
    """Compare a cluster with what its provider holds; exit non-zero when anything drifted."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("name", metavar="NAME")
        parser.add_argument("--repair", action="store_true",
                            help="replace missing and stopped nodes and re-run their services' "
                                 "actions (shows the plan and asks first)")
        parser.add_argument("--yes", action="store_true", help="repair without asking")
        parser.add_argument("--delete-orphans", action="store_true",
                            help="delete resources labelled with the cluster that no node holds")
        return self.add_wait(parser)

    def take_action(self, parsed_args):
        path = f"/clusters/{segment(parsed_args.name)}/check"
        body = {"delete_orphans": True} if parsed_args.delete_orphans else {}
        if parsed_args.repair:
            body.update(repair=True, dry_run=True)
        try:
            report = self.client.post(path, body)
        except ClientError as error:
            if parsed_args.repair and "nothing to repair" in str(error):
                report = self.client.post(path, {})
            else:
                raise
        out = self.app.stdout
        for node in report["nodes"]:
            detail = f" ({node['detail']})" if node["detail"] else ""
            out.write(f"{node['node']} {node['resource_id']}: {node['state']}{detail}\n")
        for orphan in report["orphans"]:
            out.write(f"orphan {orphan['resource_id']} ({orphan['state']}"
                      f"{', node ' + orphan['node'] if orphan['node'] else ''})\n")
        for resource_id in report.get("deleted_orphans", []):
            out.write(f"deleted orphan {resource_id}\n")
        if report["orphans"] and not parsed_args.delete_orphans:
            self.warn(f"{len(report['orphans'])} orphan(s): delete them with 'shoal cluster "
                      f"check {parsed_args.name} --delete-orphans'")
        repair = report.get("repair")
        if not parsed_args.repair or repair is None:
            if report["drifted"]:
                self.warn(f"cluster {parsed_args.name} drifted from what Shoal made")
                return 1
            self.warn(f"cluster {parsed_args.name} matches its provider")
            return 0
        tasks = [t for t in repair["tasks"] if t["action"] != "JOIN"]
        self.warn(f"repair replaces {', '.join(repair['nodes'])} in {len(tasks)} tasks:")
        for task in tasks:
            self.warn(f"  {task['node'] or '-'} {task['action']} {task['service'] or ''}")
        if not parsed_args.yes:
            if not sys.stdin.isatty():
                raise ClientError("repair not confirmed: give --yes to run it without a "
                                  "terminal")
            self.warn("Run this repair? [y/N] ")
            if sys.stdin.readline().strip().lower() not in ("y", "yes"):
                self.warn("not repaired")
                return 1
        result = self.client.post(path, {"repair": True})
        if not result.get("repair", {}).get("operation"):
            raise ClientError("nothing to repair any more")
        self.started(parsed_args, {"operation": result["repair"]["operation"]},
                     parsed_args.name)
        return 0
