"""A stand-in, on 127.0.0.1, for the Hugging Face Hub and the authors' file hosts: serves bytes the tests make,
with the headers huggingface_hub reads (X-Repo-Commit, ETag) on hub paths, byte ranges for resumed downloads,
a log of every request, and connections dropped part-way on request."""
import hashlib
import http.server
import re
import threading

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class WeightsServer:
    def __init__(self):
        self.files, self.requests, self.drop_once = {}, [], set()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self.answer(body=False)

            def do_GET(self):
                self.answer(body=True)

            def answer(self, body):
                server.requests.append((self.command, self.path, self.headers.get("Range")))
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start, status = 0, 200
                match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if match:
                    start, status = int(match.group(1)), 206
                    if start >= len(data):
                        self.send_error(416)
                        return
                self.send_response(status)
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("Accept-Ranges", "bytes")
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                if "/resolve/" in self.path:
                    self.send_header("X-Repo-Commit", COMMIT)
                    self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.end_headers()
                if not body:
                    return
                if self.path in server.drop_once and not match:
                    server.drop_once.discard(self.path)
                    self.wfile.write(data[:len(data) // 2])  # then the connection closes: the client must resume
                    return
                self.wfile.write(data[start:])

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def add_hub_file(self, repo, filename, data):
        self.files[f"/{repo}/resolve/main/{filename}"] = data

    def add_file(self, path, data):
        self.files[path] = data
        return self.url + path

    def gets(self, path_part):
        return [entry for entry in self.requests if entry[0] == "GET" and path_part in entry[1]]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
