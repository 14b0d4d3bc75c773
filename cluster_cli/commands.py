"""Every ``shoal`` command, name -> "module:Class" (the one place that lists them)."""

NOUNS = ("provider", "hardwaretype", "imagetype", "service", "template", "partial")

COMMANDS = {
    "complete": "cliff.complete:CompleteCommand",
    "server start": "cluster_cli.v1.server:StartServer",
    "server stop": "cluster_cli.v1.server:StopServer",
    "server status": "cluster_cli.v1.server:ServerStatus",
    "server logs": "cluster_cli.v1.server:ServerLogs",
    "catalog import": "cluster_cli.v1.catalog:ImportCatalog",
    "catalog export": "cluster_cli.v1.catalog:ExportCatalog",
    "catalog check": "cluster_cli.v1.catalog:CheckCatalog",
}

for _noun in NOUNS:
    for _verb in ("create", "list", "show", "update", "delete"):
        COMMANDS[f"{_noun} {_verb}"] = (
            f"cluster_cli.v1.entities:{_verb.capitalize()}{_noun.capitalize()}"
        )
