"""--wait's progress line: on a terminal it keeps moving while a poll waits on a busy server."""

import io
import threading

import pytest

from cluster_cli import progress
from cluster_cli.client import ClientError


def op(status, done, total=10):
    return {"id": "op-1", "kind": "create", "status": status, "error": None, "cluster": "big",
            "cluster_status": "CREATING", "counts": {"SUCCEEDED": done}, "total": total,
            "running": []}


class Terminal(io.StringIO):
    def __init__(self):
        super().__init__()
        self.rewritten = threading.Event()
        self.lines = []

    def isatty(self):
        return True

    def write(self, text):
        self.lines.append(text)
        if len(self.lines) > 1 and "3/10" in text:  # a rewrite of the line the poll showed
            self.rewritten.set()
        return super().write(text)


class SlowServer:
    """Answers the second poll only once the line was rewritten without it."""

    def __init__(self, terminal, final="SUCCEEDED"):
        self.terminal, self.final, self.polls = terminal, final, 0

    def get(self, path):
        self.polls += 1
        if self.polls == 1:
            return op("RUNNING", 3)
        assert self.terminal.rewritten.wait(60), "the line did not move while the poll waited"
        return op(self.final, 10)


def test_the_line_moves_while_a_poll_waits():
    terminal = Terminal()
    done = progress.wait(SlowServer(terminal), "op-1", stream=terminal, interval=0)
    assert done["status"] == "SUCCEEDED"
    rewrites = [line for line in terminal.lines if "3/10" in line]
    assert len(rewrites) >= 2 and all(line.startswith("\r\033[K") and line.endswith(" s]")
                                      for line in rewrites)
    assert "10/10 tasks done" in terminal.lines[-2] and terminal.lines[-1] == "\n"


def test_a_failed_operation_still_ends_the_line_and_raises():
    terminal = Terminal()
    with pytest.raises(ClientError, match="create of cluster big failed"):
        progress.wait(SlowServer(terminal, final="FAILED"), "op-1", stream=terminal, interval=0)
    assert terminal.lines[-1] == "\n"


def test_without_a_terminal_each_change_is_one_line():
    stream = io.StringIO()
    server = iter([op("RUNNING", 3), op("RUNNING", 3), op("SUCCEEDED", 10)])
    progress.wait(type("C", (), {"get": lambda self, path: next(server)})(), "op-1",
                  stream=stream, interval=0)
    assert stream.getvalue().splitlines() == [
        "create big: running, 3/10 tasks done, 0 running, 0 failed",
        "create big: succeeded, 10/10 tasks done, 0 running, 0 failed"]


def test_the_line_moves_while_the_operation_is_planned_and_is_erased_after():
    terminal = Terminal()
    answered = threading.Event()
    with progress.preparing("create big: planning", stream=terminal):
        # The request takes long enough for the ticker to rewrite the line at least once.
        threading.Timer(progress.TICK * 2.5, answered.set).start()
        answered.wait(10)
    planning = [line for line in terminal.lines if "create big: planning" in line]
    assert len(planning) >= 2 and all(line.endswith(" s]") for line in planning)
    assert terminal.lines[-1] == "\r\033[K"  # erased: the operation's own line comes next


def test_no_planning_line_off_a_terminal():
    stream = io.StringIO()
    with progress.preparing("create big: planning", stream=stream):
        pass
    assert stream.getvalue() == ""
