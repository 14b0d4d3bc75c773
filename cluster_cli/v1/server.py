"""``shoal server start|stop|status|logs``: the local server process."""

import collections

from cluster_cli import daemon
from cluster_cli.client import ClientError
from cluster_cli.v1.base import ShoalCommand, ShoalShowOne, positive_int


class LocalServerCommand(ShoalCommand):
    """A command on the server process of this SHOAL_HOME: it would act on the local server
    even when --url/SHOAL_URL names another one, so it refuses them."""

    def run(self, parsed_args):
        if self.client.explicit_url:
            raise ClientError(f"{self.cmd_name} manages the local server; it does not take "
                              "--url/SHOAL_URL")
        return super().run(parsed_args)


class StartServer(LocalServerCommand):
    """Start the local Shoal server in the background (does nothing if it runs)."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("--port", type=int, default=None,
                            help="port on 127.0.0.1 (default: $SHOAL_PORT, else a free one)")
        parser.add_argument("--parallelism", type=int, metavar="N",
                            help="worker threads running tasks (default: $SHOAL_PARALLELISM, "
                                 "else 4 per core, at least 8)")
        parser.add_argument("--retries", type=int, metavar="N",
                            help="attempts after the first for a failing task (default 2)")
        parser.add_argument("--retry-backoff", type=float, metavar="SECONDS",
                            help="wait before the first retry, doubling after (default 1)")
        parser.add_argument("--executor", choices=("threads", "celery"),
                            help="where tasks run: threads of the server (default) or Celery "
                                 "workers (default: $SHOAL_EXECUTOR)")
        parser.add_argument("--broker", metavar="URL",
                            help="the Celery broker, redis://HOST:PORT/DB (default: "
                                 "$SHOAL_BROKER)")
        return parser

    def take_action(self, parsed_args):
        was = daemon.running_pid()
        settings = {f"SHOAL_{key.upper()}": str(value) for key, value in (
            ("parallelism", parsed_args.parallelism), ("retries", parsed_args.retries),
            ("retry_backoff", parsed_args.retry_backoff), ("executor", parsed_args.executor),
            ("broker", parsed_args.broker)) if value is not None}
        if was and settings:
            self.warn("the server already runs: stop it first for these settings to apply")
        url = daemon.start(port=parsed_args.port, settings=settings)
        state = "already running" if was else "started"
        self.app.stdout.write(f"Shoal server {state} at {url} (pid {daemon.running_pid()})\n")


class StopServer(LocalServerCommand):
    """Stop the local Shoal server; running operations resume at the next start."""

    def take_action(self, parsed_args):
        pid = daemon.stop()
        self.app.stdout.write("Shoal server stopped\n" if pid else "Shoal server not running\n")


class ServerStatus(ShoalShowOne):
    """Show whether the server runs, where, and its version."""

    def take_action(self, parsed_args):
        pid = daemon.running_pid()
        if not pid and not self.client.explicit_url:
            return self.show_dict({"status": "stopped", "url": "", "pid": ""}, parsed_args)
        info = self.client.get("/server")
        return self.show_dict({"status": "running", "url": self.client.url(),
                               "pid": info["pid"], "version": info["version"],
                               "home": info["home"]}, parsed_args)


class ServerLogs(LocalServerCommand):
    """Print the end of the server's log."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("-n", "--lines", type=positive_int, default=50,
                            help="how many lines from the end (default 50)")
        return parser

    def take_action(self, parsed_args):
        try:
            with open(daemon.log_path(), errors="replace") as log:
                tail = collections.deque(log, maxlen=parsed_args.lines)
        except FileNotFoundError:
            raise ClientError("no server log yet: the server has not started in this "
                              "SHOAL_HOME") from None
        self.app.stdout.write("".join(tail))
