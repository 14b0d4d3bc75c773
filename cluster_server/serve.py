"""Run the Shoal server: ``python -m cluster_server.serve [--host H] [--port P]``.

Served by waitress, a production WSGI server with a thread pool. Writes ``server.json``
(pid, url) in SHOAL_HOME once it listens, so the CLI knows where to find it.
"""

import argparse
import fcntl
import gc
import json
import logging
import os
import signal
import sys

from cluster_server import config


def _error_response(error, ident=None):
    """Waitress's own refusals (a body over the largest limit, a malformed request) in the one
    error shape of the API, instead of its text/plain page."""
    from cluster_server.contract import limits
    from cluster_server.resources import human_size

    if error.code == 413:
        code, largest = "too_large", limits.largest_body()
        message = (f"request body is over the limit of {human_size(largest)} "
                   "(SHOAL_MAX_JSON_BYTES, SHOAL_RESOURCE_MAX_BYTES)")
        details = {"field": "body", "limit": largest, "reason": "too large"}
    else:
        code = error.reason.lower().replace(" ", "_")
        message, details = f"{error.reason}: {error.body}", {}
    body = json.dumps({"error": {"code": code, "message": message, "details": details}})
    return (f"{error.code} {error.reason}", [("Content-Type", "application/json")],
            body.encode())


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
    from cluster_server.managed.records import LogMask

    for handler in logging.getLogger().handlers:
        handler.addFilter(LogMask())  # a database's password never reaches the log
    import waitress.server
    import waitress.utilities

    from cluster_server.app import create_app
    from cluster_server.contract import limits
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
    # What start-up made (modules, the app, the catalog) lives as long as the server: out of
    # the collector's sight, so that a request making many objects (a plan of 10,000 nodes)
    # no longer sets off a full collection over all of it (25-30 ms, every third plan).
    gc.freeze()
    # Waitress reads a whole body (spooled to disk past 512 KiB) before the app sees the
    # request; past this size it answers 413 on the headers alone and reads nothing. The
    # routes' own, smaller limits (contract.limits) apply to what gets through.
    waitress.utilities.Error.to_response = _error_response
    server = waitress.server.create_server(app, host=args.host, port=args.port,
                                           threads=args.threads, ident="shoal",
                                           max_request_body_size=limits.largest_body())
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
        if app.health is not None:
            app.health.stop()  # first: no restart is planned by a server going down
        if app.janitor is not None:
            app.janitor.stop()  # before the engine: no delete starts as the server goes down
        if app.engine is not None:
            app.engine.stop()
        try:
            if json.loads(state.read_text()).get("pid") == os.getpid():
                state.unlink()
        except (OSError, ValueError):
            pass


if __name__ == "__main__":
    sys.exit(main())
