"""``shoal catalog import|export|check``: the whole catalog at once."""

import json
import pathlib

from cluster_cli import files
from cluster_cli.v1.base import ShoalCommand, ShoalLister


class ImportCatalog(ShoalCommand):
    """Import a catalog directory (Coopr layout), an export file or one entity file.

    Every file is validated first; if one is bad, nothing is written. References to
    entities that are not in the catalog are accepted and reported as warnings.
    """

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("path", metavar="FILE|DIR",
                            help="a directory with providers/, hardwaretypes/, imagetypes/, "
                                 "services/, clustertemplates/, partialtemplates/; or a file")
        return parser

    def take_action(self, parsed_args):
        entities = files.catalog_entities(parsed_args.path)
        result = self.client.post("/catalog/import", {"entities": entities})
        self.print_warnings(result["warnings"])
        self.app.stdout.write(f"Imported {result['imported']} entities from "
                              f"{parsed_args.path}\n")


class ExportCatalog(ShoalCommand):
    """Export the whole catalog (templates as written, secrets masked); re-imports unchanged."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("--dir", metavar="DIR",
                            help="write a catalog directory (Coopr layout, one JSON file per "
                                 "entity) instead of one document on stdout")
        parser.add_argument("--format", choices=("json", "yaml"), default="json",
                            help="format of the document on stdout (default json)")
        return parser

    def take_action(self, parsed_args):
        entities = self.client.get("/catalog/export")["entities"]
        dirs = {kind: plural for plural, kind in files.DIRS.items()}
        if parsed_args.dir:
            root = pathlib.Path(parsed_args.dir)
            for entity in entities:
                folder = root / dirs[entity["kind"]]
                folder.mkdir(parents=True, exist_ok=True)
                target = folder / f"{entity['body']['name']}.json"
                target.write_text(json.dumps(entity["body"], indent=2, sort_keys=True) + "\n")
            self.app.stdout.write(f"Exported {len(entities)} entities to {root}\n")
            return
        document = {}
        for entity in entities:
            document.setdefault(dirs[entity["kind"]], []).append(entity["body"])
        if parsed_args.format == "yaml":
            import yaml

            self.app.stdout.write(yaml.safe_dump(document, sort_keys=True))
        else:
            self.app.stdout.write(json.dumps(document, indent=2, sort_keys=True) + "\n")


class CheckCatalog(ShoalLister):
    """List every reference to an entity missing from the catalog, and plugins not installed."""

    def take_action(self, parsed_args):
        warnings = self.client.get("/catalog/check")["warnings"]
        rows = [(w["entity"], w["name"], w["missing"], w["ref"], ", ".join(w["fields"]))
                for w in warnings]
        return ("Entity", "Name", "Missing kind", "Missing name", "Fields"), rows


