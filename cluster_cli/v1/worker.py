"""``shoal worker start|status``: Celery workers that run Shoal's tasks on other machines."""

import os
import subprocess
import sys

from cluster_cli.client import ClientError, shoal_home
from cluster_cli.v1.base import ShoalCommand, ShoalLister, positive_int


class StartWorker(ShoalCommand):
    """Start a Celery worker that runs Shoal's tasks (foreground; --detach for background).

    It needs the broker and the nodes, never the server's store or token."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("--broker", default=None, metavar="URL",
                            help="redis://HOST:PORT/DB (default: $SHOAL_BROKER)")
        parser.add_argument("--queues", default="shoal.default", metavar="Q[,Q...]",
                            help="queues to serve: shoal.<tenant>, or shoal.<tenant>.<provider> "
                                 "for a provider in SHOAL_PROVIDER_QUEUES (default shoal.default)")
        parser.add_argument("--concurrency", type=positive_int, default=4, metavar="N",
                            help="messages made at once (default 4); a message holds up to "
                                 "8 calls that became ready together, made side by side")
        parser.add_argument("--name", default="", metavar="NAME",
                            help="worker name, e.g. lab1@%%h (default shoal-<pid>@<host>)")
        parser.add_argument("--pool", default="prefork", choices=("prefork", "threads", "solo"),
                            help="Celery pool: prefork (default: a lost process's task is "
                                 "delivered again at once) or threads")
        parser.add_argument("--loglevel", default="WARNING",
                            choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                            help="Celery's log level (default WARNING; INFO logs every call)")
        parser.add_argument("--detach", action="store_true",
                            help="run in the background; log and pid under SHOAL_HOME/workers")
        return parser

    def take_action(self, parsed_args):
        broker = parsed_args.broker or os.environ.get("SHOAL_BROKER", "")
        if not broker:
            raise ClientError("no broker: --broker redis://HOST:PORT/DB or SHOAL_BROKER")
        argv = [sys.executable, "-m", "cluster_server.workers.worker", "--broker", broker,
                "--queues", parsed_args.queues, "--concurrency", str(parsed_args.concurrency),
                "--pool", parsed_args.pool, "--loglevel", parsed_args.loglevel]
        if parsed_args.name:
            argv += ["--name", parsed_args.name]
        if not parsed_args.detach:
            sys.stdout.flush()
            os.execv(sys.executable, argv)  # the worker is this process, as `celery worker`
        folder = shoal_home() / "workers"
        folder.mkdir(mode=0o700, exist_ok=True)
        label = (parsed_args.name or "worker").replace("/", "_").replace("%", "_")
        log_path = folder / f"{label}-{os.getpid()}.log"
        with open(log_path, "ab") as log:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                       start_new_session=True)
        (folder / f"{label}-{process.pid}.pid").write_text(str(process.pid))
        self.app.stdout.write(f"Shoal worker started (pid {process.pid}, log {log_path})\n")


class WorkerStatus(ShoalLister):
    """List the workers the server's broker knows, their queues and the tasks they run."""

    def take_action(self, parsed_args):
        info = self.client.get("/workers")
        if info["executor"] != "celery":
            self.app.stderr.write("the server runs tasks on its own threads (--executor "
                                  "threads): no workers\n")
        return (("Name", "Queues", "Concurrency", "Running"),
                [(w["name"], ",".join(w["queues"]), w["concurrency"], ",".join(w["running"]))
                 for w in info["workers"]])
