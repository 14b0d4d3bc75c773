"""The HTTP side of the tests' fake clouds (``aws_fakes.EC2Proxy``, ``fake_gce.FakeGCE``): a real
server on 127.0.0.1 and a free port, run in a thread, handing every request to the fake."""

import http.server
import socket
import threading


class LoopbackHTTP:
    """Serves ``self.respond(method, path, headers, body)``, which a subclass defines and which
    returns ``(status, [(header, value), ...], body bytes)``; Content-Length is added here."""

    def __init__(self, thread_name):
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def setup(self):
                super().setup()
                # Headers and body go out as two writes: without this, each answer waits for
                # the client's delayed ACK (40 ms).
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def _serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, headers, reply = fake.respond(self.command, self.path,
                                                      dict(self.headers), body)
                try:
                    self.send_response(status)
                    for name, value in headers:
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(reply)))
                    self.end_headers()
                    self.wfile.write(reply)
                except OSError:
                    pass  # the client is gone (a killed Shoal server): the call happened anyway

            do_GET = do_POST = do_DELETE = _serve

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                       name=thread_name)

    def respond(self, method, path, headers, body):
        raise NotImplementedError

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
