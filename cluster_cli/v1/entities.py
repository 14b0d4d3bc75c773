"""``shoal <noun> create|list|show|update|delete`` for the six catalog kinds.

One set of classes made per noun: the kinds differ only in their path and list columns.
"""

from cluster_cli import files
from cluster_cli.client import ClientError, segment
from cluster_cli.commands import NOUNS
from cluster_cli.v1.base import ShoalCommand, ShoalLister, ShoalShowOne

PATHS = {kind: "/" + plural for plural, kind in files.DIRS.items()}

LIST_COLUMNS = {
    "provider": (("Name", "name"), ("Type", "providertype"), ("Description", "description")),
    "hardwaretype": (("Name", "name"), ("Providers", "providermap"),
                     ("Description", "description")),
    "imagetype": (("Name", "name"), ("Providers", "providermap"), ("Description", "description")),
    "service": (("Name", "name"), ("Actions", "provisioner.actions"),
                ("Description", "description")),
    "template": (("Name", "name"), ("Provider", "defaults.provider"),
                 ("Services", "defaults.services"), ("Description", "description")),
    "partial": (("Name", "name"), ("Description", "description")),
}


def _get(body, dotted):
    for key in dotted.split("."):
        body = body.get(key) if isinstance(body, dict) else None
    if isinstance(body, dict):
        return ", ".join(sorted(body))
    if isinstance(body, list):
        return ", ".join(map(str, body))
    return body if body is not None else ""


def _read_body(path):
    body = files.load(path)
    if not isinstance(body, dict):
        raise ClientError(f"{path}: must hold one JSON/YAML object")
    return body


class _Create(ShoalShowOne):
    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("file", metavar="FILE",
                            help=f"JSON or YAML file with the {self.kind} ('-' for stdin)")
        return parser

    def take_action(self, parsed_args):
        result = self.client.post(PATHS[self.kind], _read_body(parsed_args.file))
        self.print_warnings(result["warnings"])
        return self.show_dict(result["entity"], parsed_args)


class _List(ShoalLister):
    def take_action(self, parsed_args):
        columns = LIST_COLUMNS[self.kind]
        rows = self.client.get(PATHS[self.kind])
        return ([title for title, _ in columns],
                [[_get(body, key) for _, key in columns] for body in rows])


class _Show(ShoalShowOne):
    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("name", metavar="NAME", help=f"name of the {self.kind}")
        if self.kind == "template":
            parser.add_argument("--raw", action="store_true",
                                help="show the template as stored, without its extends/"
                                     "includes merged in")
        return parser

    def take_action(self, parsed_args):
        params = {"raw": "1"} if getattr(parsed_args, "raw", False) else {}
        body = self.client.get(f"{PATHS[self.kind]}/{segment(parsed_args.name)}", **params)
        return self.show_dict(body, parsed_args)


class _Update(ShoalShowOne):
    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("name", metavar="NAME", help=f"name of the {self.kind}")
        parser.add_argument("file", metavar="FILE",
                            help=f"JSON or YAML file with the new {self.kind} ('-' for stdin)")
        return parser

    def take_action(self, parsed_args):
        result = self.client.put(f"{PATHS[self.kind]}/{segment(parsed_args.name)}",
                                 _read_body(parsed_args.file))
        self.print_warnings(result["warnings"])
        return self.show_dict(result["entity"], parsed_args)


class _Delete(ShoalCommand):
    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("names", metavar="NAME", nargs="+",
                            help=f"name of the {self.kind} to delete")
        return parser

    def take_action(self, parsed_args):
        failed = 0
        for name in parsed_args.names:
            try:
                result = self.client.delete(f"{PATHS[self.kind]}/{segment(name)}")
                self.print_warnings(result.get("warnings"))
            except ClientError as error:
                failed += 1
                self.warn(f"error: {error}")
        if failed:
            raise ClientError(f"{failed} of {len(parsed_args.names)} {self.kind}s "
                              "failed to delete")


_HELP = {
    "create": "Create {article} {kind} from a JSON or YAML file.",
    "list": "List {kind}s.",
    "show": "Show one {kind}.",
    "update": "Replace {article} {kind} with the content of a JSON or YAML file.",
    "delete": "Delete one or more {kind}s.",
}
_BASES = {"create": _Create, "list": _List, "show": _Show, "update": _Update, "delete": _Delete}
_LABELS = {"hardwaretype": "hardware type", "imagetype": "image type",
           "template": "cluster template", "partial": "partial template"}

for _noun in NOUNS:
    for _verb, _base in _BASES.items():
        _label = _LABELS.get(_noun, _noun)
        _name = f"{_verb.capitalize()}{_noun.capitalize()}"
        _help = _HELP[_verb].format(kind=_label, article="an" if _label[0] in "aeiou" else "a")
        globals()[_name] = type(_name, (_base,), {"kind": _noun, "__doc__": _help})

