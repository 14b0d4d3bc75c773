"""``shoal ui``: a one-time link that logs a browser into the server's web UI."""

import webbrowser

from cluster_cli.v1.base import ShoalCommand


class OpenUI(ShoalCommand):
    """Print a link that logs a browser into the web UI once (valid for a minute).

    The link carries a single-use code, never the API token; the browser trades it for a
    session cookie. It lands on the templates, or on a cluster's page with --cluster.
    """

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("--cluster", metavar="NAME", help="land on this cluster's page")
        parser.add_argument("--open", action="store_true",
                            help="open the link in the default browser as well")
        return parser

    def take_action(self, parsed_args):
        body = {"cluster": parsed_args.cluster} if parsed_args.cluster else {}
        login = self.client.post("/ui/logins", body)
        url = self.client.url().rstrip("/") + login["path"]
        self.app.stdout.write(url + "\n")
        if parsed_args.open and not webbrowser.open(url):
            self.warn("no browser could be opened here; open the link above yourself")
