"""The ``shoal`` command: a cliff App whose command classes are imported only when used."""

import importlib
import sys

from cliff.app import App
from cliff.commandmanager import CommandManager

from cluster_cli.commands import COMMANDS
from cluster_server.version import VERSION


class LazyEntry:
    """Looks like an entry point to cliff; imports the command's module on ``load()``.

    Scanning entry points of every installed package on each run is what makes cliff tools
    slow to start, so the command table is a plain dict in this package.
    """

    def __init__(self, name, target):
        self.name = name
        self.value = target

    def load(self):
        module, _, attr = self.value.partition(":")
        return getattr(importlib.import_module(module), attr)


class ShoalCommandManager(CommandManager):
    def __init__(self):
        super().__init__(namespace=None)
        for name, target in COMMANDS.items():
            self.commands[name] = LazyEntry(name, target)


class ShoalApp(App):
    def __init__(self):
        super().__init__(
            description="Shoal: make clusters from templates on local sandboxes, SSH hosts, "
                        "containers and clouds.",
            version=VERSION,
            command_manager=ShoalCommandManager(),
            deferred_help=True,
        )

    def build_option_parser(self, description, version, argparse_kwargs=None):
        parser = super().build_option_parser(description, version, argparse_kwargs)
        parser.add_argument("--url", metavar="URL",
                            help="the Shoal server to talk to (default: $SHOAL_URL, else the "
                                 "local server, started when needed)")
        parser.add_argument("--tenant", metavar="TENANT",
                            help="the tenant to act in (default: $SHOAL_TENANT, else your "
                                 "token's tenant: 'default' for the local owner)")
        return parser

    def initialize_app(self, argv):
        self._client = None

    def interact(self):
        # With no command cliff opens an interactive shell; print the command list instead, as
        # 'shoal --help' does (it exits 0).
        self.options.deferred_help = True
        self.print_help_if_requested()

    @property
    def client(self):
        if self._client is None:
            from cluster_cli.client import Client

            self._client = Client(url=self.options.url, tenant=self.options.tenant)
        return self._client


def main(argv=None):
    return ShoalApp().run(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
