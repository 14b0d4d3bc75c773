"""Run the Shoal server: ``python -m cluster_server.serve [--host H] [--port P]``.

Served by waitress, a production WSGI server with a thread pool. Writes ``server.json``
(pid, url) in SHOAL_HOME once it listens, so the CLI knows where to find it.
"""

import argparse
import fcntl
import json
import logging
import os
import signal
import sys

from cluster_server import config


def main(argv=None):
    parser = argparse.ArgumentParser(prog="shoal-server")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: loopback only)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("SHOAL_PORT", 0) or
                                                        config.DEFAULT_PORT))
    parser.add_argument("--threads", type=int, default=16)
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import waitress.server

    from cluster_server.app import create_app
    from cluster_server.errors import ShoalError

    home = config.home()
    opened = config.make_private(home)
    if opened is not None:
        logging.getLogger("shoal.server").warning(
            "%s was mode %o; made it 0700 (it holds secrets)", home, opened)
    # One server per home: two engines would run the same operations twice.
    lock = open(home / "server.lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        logging.getLogger("shoal.server").error(
            "another Shoal server already runs for %s; not starting", home)
        return 1
    # SHOAL_DEFAULT_CATALOG=0: start with an empty catalog (tests of the catalog itself).
    try:
        app = create_app(home, seed=os.environ.get("SHOAL_DEFAULT_CATALOG", "1") != "0")
    except ShoalError as error:  # e.g. the store's key is missing: said in one line, no trace
        logging.getLogger("shoal.server").error("not starting: %s", error.message)
        return 1
    server = waitress.server.create_server(app, host=args.host, port=args.port,
                                           threads=args.threads, ident="shoal")
    host, port = server.effective_host, server.effective_port
    state = home / "server.json"
    config.write_private(state, json.dumps({"pid": os.getpid(), "url": f"http://{host}:{port}"}))
    logging.getLogger("shoal.server").info("listening on http://%s:%s", host, port)

    def stop(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    try:
        server.run()
    finally:
        if app.engine is not None:
            app.engine.stop()
        try:
            if json.loads(state.read_text()).get("pid") == os.getpid():
                state.unlink()
        except (OSError, ValueError):
            pass


if __name__ == "__main__":
    sys.exit(main())
