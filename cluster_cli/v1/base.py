"""Shared pieces of the command classes: the client, warnings, one-line errors."""

import argparse
import json
import sys

from cliff.command import Command
from cliff.lister import Lister
from cliff.show import ShowOne


class ClientMixin:
    def get_epilog(self):
        # cliff's default scans every installed distribution to name the plugin that provides
        # the command (about 0.3 s); all our commands come from Shoal itself.
        return self._epilog or ""

    def _load_hooks(self):
        # Shoal declares no cliff command hooks; looking for them reads every installed
        # package's entry points (see cluster_cli/formatters.py).
        self._hooks = []

    def _load_formatter_plugins(self):
        from cluster_cli import formatters

        return formatters.manager(self.formatter_namespace)

    @property
    def client(self):
        return self.app.client

    def warn(self, message):
        print(message, file=sys.stderr)

    def print_warnings(self, warnings):
        for warning in warnings or []:
            self.warn(f"warning: {warning['message']}")


def positive_int(text):
    """An argparse type for counts such as --lines: zero or less would print nothing, or
    everything, or fail deep inside with a message that names no option."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number above 0, not '{text}'")
    return value


def add_limit(parser, what, default=1000):
    """--limit N: the first N rows of a long list (0: all of them)."""
    parser.add_argument("--limit", type=non_negative_int, default=default, metavar="N",
                        help=f"show at most N {what} (default {default}; 0: all)")


def non_negative_int(text):
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number, 0 or more, not '{text}'")
    return value


def cell(value, parsed_args):
    """Nested values print as JSON in table/value/csv output and stay nested in json/yaml."""
    if isinstance(value, (dict, list)) and getattr(parsed_args, "formatter", "") not in (
        "json", "yaml"
    ):
        return json.dumps(value, sort_keys=True)
    return value


class ShoalCommand(ClientMixin, Command):
    pass


class ShoalLister(ClientMixin, Lister):
    pass


class ShoalShowOne(ClientMixin, ShowOne):
    def show_dict(self, data, parsed_args):
        columns = tuple(data)
        return columns, tuple(cell(data[key], parsed_args) for key in columns)
