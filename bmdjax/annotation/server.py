"""The local web application of `bmdjax.annotate` (stdlib http.server).

Routes (everything else answers 404):
  GET  /                      the page (static/index.html)
  GET  /static/<file>         app.js, style.css (shipped in the package)
  GET  /api/queue             review order, status of each study, progress
  GET  /api/study?image=REL   pre-filled or saved points, checks, ROI boxes
  GET  /api/image?image=REL   the radiograph as read for training, 8-bit PNG
  POST /api/check             {image, landmarks, confidence} -> checks, ROI boxes
  POST /api/save              {image, status, landmarks | reason, revision}
A study is addressed by its path relative to --dicom_dir and must be one of
the session's studies; anything else (unknown names, ../, absolute paths,
links out of the folder) is 404. No DICOM header text reaches the page.
"""

from __future__ import annotations

import http.server
import importlib.resources
import json
import logging
import threading
import urllib.parse

from bmdjax.annotation import queue as queue_lib
from bmdjax.annotation import store as store_lib
from data_prep import dicom_io, landmark_checks

STATIC = {"index.html": "text/html; charset=utf-8",
          "app.js": "text/javascript; charset=utf-8",
          "style.css": "text/css; charset=utf-8"}
MAX_BODY = 1 << 20


def static_file(name: str) -> bytes:
  return importlib.resources.files("bmdjax.annotation").joinpath("static", name).read_bytes()


class NotFound(Exception):
  pass


def make_handler(session: queue_lib.Session):

  class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "bmdjax-annotate"

    def log_message(self, fmt, *args):  # quiet: one line per error only
      logging.debug(fmt, *args)

    # ---------------------------------------------------------- replies
    def _send(self, code: int, body: bytes, ctype: str):
      self.send_response(code)
      self.send_header("Content-Type", ctype)
      self.send_header("Content-Length", str(len(body)))
      self.send_header("Cache-Control", "no-store")
      self.send_header("X-Content-Type-Options", "nosniff")
      self.send_header("Content-Security-Policy",
                       "default-src 'self'; img-src 'self' data:; connect-src 'self'")
      self.end_headers()
      self.wfile.write(body)

    def _json(self, code: int, obj):
      self._send(code, json.dumps(obj).encode(), "application/json")

    def _study_name(self, query) -> str:
      name = (query.get("image") or [""])[0]
      if name not in session.studies or session.studies[name].path is None:
        raise NotFound(name)
      return name

    def _dispatch(self, method: str):
      url = urllib.parse.urlsplit(self.path)
      query = urllib.parse.parse_qs(url.query)
      try:
        if method == "GET":
          self._get(url.path, query)
        else:
          length = int(self.headers.get("Content-Length") or 0)
          if length > MAX_BODY:
            return self._json(413, {"error": "request too large"})
          try:
            body = json.loads(self.rfile.read(length) or b"{}")
          except json.JSONDecodeError:
            return self._json(400, {"error": "body is not JSON"})
          self._post(url.path, body)
      except NotFound:
        self._json(404, {"error": "not found"})
      except dicom_io.StudyError as e:
        self._json(422, {"error": e.reason})
      except (ValueError, TypeError) as e:
        self._json(400, {"error": str(e)})

    def do_GET(self):  # noqa: N802 (http.server's name)
      self._dispatch("GET")

    def do_POST(self):  # noqa: N802
      self._dispatch("POST")

    # ---------------------------------------------------------- routes
    def _get(self, path: str, query):
      if path in ("/", "/index.html"):
        return self._send(200, static_file("index.html"), STATIC["index.html"])
      if path.startswith("/static/"):
        name = path[len("/static/"):]
        if name not in STATIC:
          raise NotFound(name)
        return self._send(200, static_file(name), STATIC[name])
      if path == "/api/queue":
        return self._json(200, session.queue())
      if path == "/api/study":
        return self._json(200, session.study(self._study_name(query)))
      if path == "/api/image":
        return self._send(200, session.png(self._study_name(query)), "image/png")
      raise NotFound(path)

    def _post(self, path: str, body: dict):
      name = body.get("image")
      if not isinstance(name, str) or name not in session.studies or \
          session.studies[name].path is None:
        raise NotFound(name)
      if path == "/api/check":
        return self._json(200, session.check(name, body.get("landmarks"),
                                             body.get("confidence")))
      if path == "/api/save":
        status, landmarks, flags = body.get("status"), body.get("landmarks"), []
        r = session.radiograph(name)
        shape = r.image.shape
        if status == "accepted":
          flags = landmark_checks.check_landmarks(landmarks, shape, body.get("confidence"),
                                                  r.pixel_spacing, session.min_confidence)
        try:
          row = session.store.save(name, status=status, landmarks=landmarks,
                                   reason=str(body.get("reason") or ""), flags=flags,
                                   shape=shape, base_revision=body.get("revision"))
        except store_lib.Conflict as e:
          return self._json(409, {"error": "this study was saved in another tab or window "
                                           "since you opened it; reloaded its saved version",
                                  "revision": int(e.row["revision"] or 0)})
        q = session.queue()
        return self._json(200, {"revision": int(row["revision"]), "status": row["status"],
                                "flags": flags, "annotated": q["annotated"],
                                "total": q["total"]})
      raise NotFound(path)

  return Handler


class Server:
  """A ThreadingHTTPServer on `host:port` (port 0: any free port) running in
  a background thread (start/stop), or in the foreground (serve_forever)."""

  def __init__(self, session: queue_lib.Session, host: str = "127.0.0.1", port: int = 8765):
    self.httpd = http.server.ThreadingHTTPServer((host, port), make_handler(session))
    self.httpd.daemon_threads = True
    self.thread = None

  @property
  def url(self) -> str:
    host, port = self.httpd.server_address[:2]
    return f"http://{host}:{port}/"

  def start(self) -> "Server":
    self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
    self.thread.start()
    return self

  def serve_forever(self):
    self.httpd.serve_forever()

  def stop(self):
    self.httpd.shutdown()
    self.httpd.server_close()
