"""``shoal resource upload|list|show|stage|activate|recall|delete``: plugin resources.

Scripts, archives and keys for automators, by kind and name; every upload is a new version and
only the active version is used by new tasks. Keys' contents are never shown.
"""

import sys
import time

from cluster_cli.client import ClientError, segment
from cluster_cli.v1.base import ShoalCommand, ShoalLister, ShoalShowOne

KINDS = ("scripts", "archives", "keys")
VERSION_COLUMNS = ("Version", "Status", "Size", "SHA256", "Uploaded")


def _path(kind, name, *rest):
    return "/".join(["/resources", segment(kind), segment(name), *map(segment, rest)])


def _add_kind_name(parser):
    parser.add_argument("kind", metavar="KIND", choices=KINDS,
                        help="scripts, archives or keys")
    parser.add_argument("name", metavar="NAME", help="name of the resource")
    return parser


def _version_rows(versions):
    return [(v["version"], v["status"], v["size"], v["sha256"],
             _when(v["created_at"])) for v in versions]


def _when(timestamp):
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


class _Change(ShoalCommand):
    """Base of the commands that change a version's state: they say what is active after."""

    def report(self, result):
        self.app.stdout.write(f"{result['kind']}/{result['name']}: active "
                              f"{result['active'] or 'none'}, staged "
                              f"{result['staged'] or 'none'}\n")


class UploadResource(ShoalShowOne):
    """Upload a file as the next version of a plugin resource (inactive until activated)."""

    def get_parser(self, prog_name):
        parser = _add_kind_name(super().get_parser(prog_name))
        parser.add_argument("file", metavar="FILE", help="the file to upload ('-' for stdin)")
        return parser

    def take_action(self, parsed_args):
        if parsed_args.file == "-":
            data = sys.stdin.buffer.read()
        else:
            try:
                with open(parsed_args.file, "rb") as f:
                    data = f.read()
            except OSError as exc:
                raise ClientError(f"{parsed_args.file}: cannot read: {exc.strerror}") from None
        result = self.client.put_bytes(_path(parsed_args.kind, parsed_args.name), data)
        version = next(v for v in result["versions"] if v["version"] == result["uploaded"])
        return self.show_dict({"kind": result["kind"], "name": result["name"],
                               "version": version["version"], "status": version["status"],
                               "size": version["size"], "sha256": version["sha256"],
                               "active": result["active"]}, parsed_args)


class ListResource(ShoalLister):
    """List plugin resources with their active and staged versions."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("--kind", choices=KINDS, help="only resources of this kind")
        return parser

    def take_action(self, parsed_args):
        rows = self.client.get("/resources", kind=parsed_args.kind)
        return (("Kind", "Name", "Active", "Staged", "Latest", "Versions"),
                [(r["kind"], r["name"], r["active"] or "", r["staged"] or "", r["latest"],
                  r["versions"]) for r in rows])


class ShowResource(ShoalLister):
    """Show every version of a plugin resource and which one is active or staged."""

    def get_parser(self, prog_name):
        return _add_kind_name(super().get_parser(prog_name))

    def take_action(self, parsed_args):
        result = self.client.get(_path(parsed_args.kind, parsed_args.name))
        return VERSION_COLUMNS, _version_rows(result["versions"])


class StageResource(_Change):
    """Stage a version of a plugin resource: the next activate without a version makes it active."""

    def get_parser(self, prog_name):
        parser = _add_kind_name(super().get_parser(prog_name))
        parser.add_argument("version", metavar="VERSION", type=int, help="version to stage")
        return parser

    def take_action(self, parsed_args):
        self.report(self.client.post(_path(parsed_args.kind, parsed_args.name, "versions",
                                           parsed_args.version, "stage")))


class ActivateResource(_Change):
    """Make the staged version (or VERSION) of a plugin resource the one new tasks use."""

    def get_parser(self, prog_name):
        parser = _add_kind_name(super().get_parser(prog_name))
        parser.add_argument("version", metavar="VERSION", type=int, nargs="?",
                            help="version to activate (default: the staged one)")
        return parser

    def take_action(self, parsed_args):
        if parsed_args.version is None:
            path = _path(parsed_args.kind, parsed_args.name, "activate")
        else:
            path = _path(parsed_args.kind, parsed_args.name, "versions", parsed_args.version,
                         "activate")
        self.report(self.client.post(path))


class RecallResource(_Change):
    """Send an active or staged version of a plugin resource back to inactive."""

    def get_parser(self, prog_name):
        parser = _add_kind_name(super().get_parser(prog_name))
        parser.add_argument("version", metavar="VERSION", type=int, help="version to recall")
        return parser

    def take_action(self, parsed_args):
        self.report(self.client.post(_path(parsed_args.kind, parsed_args.name, "versions",
                                           parsed_args.version, "recall")))


class DeleteResource(ShoalCommand):
    """Delete one version of a plugin resource, or with --all every version of it."""

    def get_parser(self, prog_name):
        parser = _add_kind_name(super().get_parser(prog_name))
        # A positional VERSION, not --version: cliff takes --version anywhere on the line as
        # "print Shoal's version".
        parser.add_argument("version", metavar="VERSION", type=int, nargs="?",
                            help="the version to delete (it must not be active)")
        parser.add_argument("--all", action="store_true",
                            help="delete every version, the active one included")
        return parser

    def take_action(self, parsed_args):
        if parsed_args.version is None and not parsed_args.all:
            raise ClientError("give the VERSION to delete, or --all for every version")
        if parsed_args.version is not None and parsed_args.all:
            raise ClientError("give a VERSION or --all, not both")
        rest = ("versions", parsed_args.version) if parsed_args.version is not None else ()
        result = self.client.delete(_path(parsed_args.kind, parsed_args.name, *rest))
        self.app.stdout.write(f"{result['kind']}/{result['name']}: deleted version(s) "
                              f"{', '.join(map(str, result['deleted']))}\n")
