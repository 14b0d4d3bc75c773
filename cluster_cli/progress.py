"""``--wait``: follow an operation until it ends, with a live progress line on stderr."""

import sys
import time

from cluster_cli.client import ClientError, segment

FINAL = ("SUCCEEDED", "FAILED", "CANCELLED")


def describe(op):
    counts = op["counts"]
    done = counts.get("SUCCEEDED", 0) + counts.get("SKIPPED", 0)
    line = (f"{op['kind']} {op['cluster']}: {op['status'].lower()}, {done}/{op['total']} tasks "
            f"done, {counts.get('RUNNING', 0)} running, {counts.get('FAILED', 0)} failed")
    if op["running"] and op["status"] not in FINAL:
        line += " — " + "; ".join(op["running"][:3])
    return line


def wait(client, op_id, stream=None, interval=0.3):
    """Block until the operation ends; raise ClientError when it did not succeed."""
    stream = stream or sys.stderr
    live = stream.isatty()
    last = None
    while True:
        op = client.get(f"/operations/{segment(op_id)}")
        line = describe(op)
        if live:
            stream.write("\r\033[K" + line[:160])
            stream.flush()
        elif line != last:
            stream.write(line + "\n")
            stream.flush()
        last = line
        if op["status"] in FINAL:
            break
        time.sleep(interval)
    if live:
        stream.write("\n")
    if op["status"] != "SUCCEEDED":
        raise ClientError(f"{op['kind']} of cluster {op['cluster']} {op['status'].lower()}: "
                          f"{op['error'] or 'see shoal task list ' + op['cluster']} "
                          f"(cluster is {op['cluster_status']})")
    return op
