"""Node facts read through the node's own transport, with no agent: load from /proc/loadavg,
memory from /proc/meminfo, disk use of the node's working directory from ``df``. Over SSH and
docker exec that is the machine's or container's /proc; for a local sandbox, this machine's
/proc and the sandbox's own file system."""

import time


SEPARATOR = "@shoal-df@\n"
SCRIPT = "cat /proc/loadavg /proc/meminfo; echo @shoal-df@; df -Pk ."


def collect(transport):
    """{"load1", "load5", "load15", "memory_total", "memory_used", "memory_pct", "disk_total",
    "disk_used", "disk_pct", "at"} (bytes and percents); what cannot be read is left out."""
    facts = {"at": time.time()}
    # One command, not two: a process (or an SSH channel) per node per round is what facts
    # cost. A fixed script: nothing of the user's reaches this shell.
    result = transport.run(["sh", "-c", SCRIPT])
    proc, _, df = result.stdout.partition(SEPARATOR)
    facts.update(parse_proc(proc))
    facts.update(parse_df(df))
    return facts


def parse_proc(text):
    facts = {}
    lines = text.splitlines()
    if lines:
        parts = lines[0].split()
        if len(parts) >= 3:
            try:
                facts.update(load1=float(parts[0]), load5=float(parts[1]),
                             load15=float(parts[2]))
            except ValueError:
                pass
    memory = {}
    for line in lines[1:]:
        name, _, rest = line.partition(":")
        fields = rest.split()
        if fields and fields[0].isdigit():
            memory[name.strip()] = int(fields[0]) * 1024
    total = memory.get("MemTotal")
    available = memory.get("MemAvailable", memory.get("MemFree"))
    if total and available is not None:
        facts.update(memory_total=total, memory_used=total - available,
                     memory_pct=round(100.0 * (total - available) / total, 1))
    return facts


def parse_df(text):
    lines = text.strip().splitlines()
    if len(lines) < 2:
        return {}
    fields = lines[-1].split()
    try:
        total, used = int(fields[1]) * 1024, int(fields[2]) * 1024
    except (IndexError, ValueError):
        return {}
    return {"disk_total": total, "disk_used": used,
            "disk_pct": round(100.0 * used / total, 1) if total else 0.0}
