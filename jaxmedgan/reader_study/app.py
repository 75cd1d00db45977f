"""`jaxmedgan reader-study serve`: the reader-study web app (Flask, plain HTML + a little JS).

Routes (every reader route carries the reader's token; the admin routes the admin token):

  GET  /                              name form            POST /start            -> 303 /r/TOKEN
  GET  /r/TOKEN                       next unanswered image (or "done"), progress k of N
  POST /r/TOKEN/answer                item_id, answer=real|synthetic, [confidence=1..5], [finding]
  GET  /r/TOKEN/image/ITEM_ID         the PNG, only for an item assigned to this reader
  GET  /admin/ADMIN_TOKEN             progress and results;  /admin/ADMIN_TOKEN/answers.csv

Answers are final. Re-posting the identical answer (double click, browser retry) is accepted
and changes nothing (303 to the next image); a different answer for an answered item is 409.
Unknown tokens and item ids are 404 (they reveal nothing), malformed forms 400, a cross-site
POST (Origin header of another site) 403, a request whose Host header is not the served host
400 (a DNS-rebinding page would otherwise pass the Origin check: its origin is "our" host name).
The access log shows reader and admin tokens as "<token>". Image files are looked up by id in the database,
never built from the URL.
"""
from __future__ import annotations

import os
import re
import secrets
import socket
import sqlite3

import flask
from werkzeug.exceptions import HTTPException

from jaxmedgan.reader_study import db, report

_HERE = os.path.dirname(os.path.abspath(__file__))
_SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; img-src 'self'; style-src 'self'; script-src 'self'; "
                                "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    "Referrer-Policy": "same-origin",  # the token in the URL never leaves this site
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


def _printable(text: str) -> bool:
    """No control characters other than newline / tab."""
    return all(ch.isprintable() or ch in "\n\t" for ch in text)


LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")


def _host_allowed(host_header: str, allowed: tuple[str, ...]) -> bool:
    """`allowed` entries are "name" (any port) or "name:port"; names compare case-insensitively."""
    host = host_header.strip().lower()
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return any(host == a.lower() or name == a.lower() for a in allowed)


def create_app(study_dir: str, allowed_hosts: tuple[str, ...] = LOCAL_HOSTS) -> flask.Flask:
    """The Flask app serving the study in `study_dir` (made by `create_study`); requests must name one
    of `allowed_hosts` in their Host header."""
    study_dir = os.path.abspath(study_dir)
    db_path = os.path.join(study_dir, db.DB_NAME)
    images_dir = os.path.join(study_dir, db.IMAGES_DIR)
    db.open_study(db_path).close()  # fail now, naming the file, rather than on the first request
    if not os.path.isdir(images_dir):
        raise FileNotFoundError(f"Reader-study images folder {images_dir!r} is missing.")

    app = flask.Flask(__name__, template_folder=os.path.join(_HERE, "templates"),
                      static_folder=os.path.join(_HERE, "static"))
    app.config.update(STUDY_DIR=study_dir, MAX_CONTENT_LENGTH=64 * 1024)

    def conn() -> sqlite3.Connection:
        if "conn" not in flask.g:
            flask.g.conn = db.connect(db_path)
        return flask.g.conn

    @app.teardown_appcontext
    def _close(_exc) -> None:
        c = flask.g.pop("conn", None)
        if c is not None:
            c.close()

    @app.before_request
    def _served_host_only() -> None:
        if not _host_allowed(flask.request.host, allowed_hosts):
            flask.abort(400, "Unexpected Host header: this server answers only for the address it serves.")

    @app.before_request
    def _same_origin_posts() -> None:
        if flask.request.method == "POST":
            origin = flask.request.headers.get("Origin")
            if origin is not None and origin != flask.request.host_url.rstrip("/"):
                flask.abort(403, "Cross-site form submission refused.")

    @app.after_request
    def _headers(resp: flask.Response) -> flask.Response:
        for k, v in _SECURITY_HEADERS.items():
            resp.headers.setdefault(k, v)
        resp.headers.setdefault("Cache-Control", "no-store")
        return resp

    @app.errorhandler(HTTPException)
    def _http_error(e: HTTPException):
        return flask.render_template("error.html", code=e.code, name=e.name, message=e.description), e.code

    def reader_or_404(token: str) -> sqlite3.Row:
        row = db.reader_by_token(conn(), token)
        if row is None:
            flask.abort(404, "Unknown reader link. Check the link you were given, or start again from the home page.")
        return row

    def admin_or_404(token: str) -> None:
        expected = db.meta(conn())["admin_token"]
        if not secrets.compare_digest(token.encode(), expected.encode()):
            flask.abort(404, "Not found.")

    @app.get("/")
    def index():
        return flask.render_template("index.html", num_items=db.num_items(conn()))

    @app.post("/start")
    def start():
        name = flask.request.form.get("name", "").strip()
        if not name or len(name) > db.MAX_NAME_CHARS or not _printable(name) or "\n" in name or "\t" in name:
            flask.abort(400, f"Please enter your name (1 to {db.MAX_NAME_CHARS} characters).")
        _, token = db.add_reader(conn(), name)
        return flask.redirect(flask.url_for("reader", token=token), 303)

    @app.get("/r/<token>")
    def reader(token: str):
        r = reader_or_404(token)
        answered, total = db.progress(conn(), r["id"])
        item = db.next_item(conn(), r["id"])
        if item is None:
            return flask.render_template("done.html", reader=r, total=total)
        return flask.render_template("item.html", reader=r, item_id=item["id"], k=answered + 1, total=total,
                                     answered=answered)

    @app.post("/r/<token>/answer")
    def answer(token: str):
        r = reader_or_404(token)
        form = flask.request.form
        item = db.assigned_item(conn(), r["id"], form.get("item_id", ""))
        if item is None:
            flask.abort(404, "Unknown image id.")
        value = form.get("answer", "")
        if value not in db.TRUTHS:
            flask.abort(400, f"answer must be one of {', '.join(db.TRUTHS)}.")
        conf_text = form.get("confidence", "").strip()
        if conf_text not in ("", "1", "2", "3", "4", "5"):
            flask.abort(400, "confidence must be 1 to 5 (or left empty).")
        finding = form.get("finding", "").strip().replace("\r\n", "\n")
        if len(finding) > db.MAX_FINDING_CHARS or not _printable(finding):
            flask.abort(400, f"The finding must be plain text of at most {db.MAX_FINDING_CHARS} characters.")
        try:
            db.save_answer(conn(), r["id"], item["id"], value, int(conf_text) if conf_text else None, finding)
        except db.AnswerConflict:
            flask.abort(409, "This image already has a different answer from you; answers are final.")
        return flask.redirect(flask.url_for("reader", token=token), 303)

    @app.get("/r/<token>/image/<item_id>")
    def image(token: str, item_id: str):
        r = reader_or_404(token)
        item = db.assigned_item(conn(), r["id"], item_id)
        if item is None:
            flask.abort(404, "Unknown image id.")
        path = os.path.join(images_dir, item["filename"])  # the file name comes from the db, never the URL
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            app.logger.error("Reader-study image %s cannot be read: %s", path, e)
            flask.abort(404, "This image file is missing from the study folder; please tell the study admin.")
        resp = flask.Response(data, mimetype="image/png")
        resp.headers["Cache-Control"] = "private, max-age=3600"
        return resp

    @app.get("/admin/<token>")
    def admin(token: str):
        admin_or_404(token)
        c = conn()
        c.execute("BEGIN")  # one consistent snapshot
        try:
            rep = report.compute(c)
            readers = db.readers(c)
        finally:
            c.execute("COMMIT")
        links = {r["id"]: flask.url_for("reader", token=r["token"], _external=True) for r in readers}
        return flask.render_template("admin.html", rep=rep, links=links, admin_token=token)

    @app.get("/admin/<token>/answers.csv")
    def admin_csv(token: str):
        admin_or_404(token)
        return flask.Response(report.answers_csv(conn()), mimetype="text/csv",
                              headers={"Content-Disposition": "attachment; filename=answers.csv"})

    return app


def redact_tokens(text: str) -> str:
    """`/r/TOKEN...` and `/admin/TOKEN...` with the token replaced by `<token>` (for logs)."""
    return re.sub(r"/(r|admin)/[^/\s?\"]+", r"/\1/<token>", text)


def _served_hosts(host: str, port: int, extra: tuple[str, ...]) -> tuple[str, ...]:
    """Host header values a browser sends for this server: the listen address, local names for a local
    listener, this machine's names for a wildcard one, and `extra` (e.g. a proxy's name)."""
    names = {host if ":" not in host else f"[{host}]"}
    if host in ("127.0.0.1", "localhost", "::1"):
        names |= {"localhost", "127.0.0.1", "[::1]"}
    if host in ("0.0.0.0", "::", ""):
        names |= {"localhost", "127.0.0.1", socket.gethostname(), socket.getfqdn()}
        try:
            names |= set(socket.gethostbyname_ex(socket.gethostname())[2])
        except OSError:
            pass
    return tuple(f"{n}:{port}" for n in sorted(names)) + tuple(extra)


def serve(study_dir: str, host: str = "127.0.0.1", port: int = 8000, allowed_hosts: tuple[str, ...] = ()) -> None:
    """Serves the study until Ctrl-C, printing the reader and admin URLs."""
    from werkzeug.serving import WSGIRequestHandler, make_server

    class _RedactingHandler(WSGIRequestHandler):
        def log(self, type: str, message: str, *args) -> None:  # every access / error line goes through here
            super().log(type, redact_tokens(message), *[redact_tokens(a) if isinstance(a, str) else a for a in args])

    if port == 0:  # the Host header carries the real port: find one now
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
    app = create_app(study_dir, _served_hosts(host, port, allowed_hosts))
    conn = db.open_study(os.path.join(study_dir, db.DB_NAME))
    try:
        admin_token, n, readers = db.meta(conn)["admin_token"], db.num_items(conn), len(db.readers(conn))
    finally:
        conn.close()
    try:
        server = make_server(host, port, app, threaded=True, request_handler=_RedactingHandler)
    except OSError as e:
        raise OSError(f"Cannot listen on {host}:{port}: {e.strerror or e}") from None
    except SystemExit:  # werkzeug prints the reason (e.g. port in use), then exits
        raise OSError(f"Cannot listen on {host}:{port} (reason above); try another --port or --host.") from None
    base = f"http://{host if ':' not in host else f'[{host}]'}:{server.port}"
    print(f"Reader study {study_dir}: {n} images, {readers} readers so far.")
    print(f"Readers start at:           {base}/")
    print(f"Admin page (keep private):  {base}/admin/{admin_token}", flush=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print("Note: plain HTTP; reader links carry their token. Use only on a trusted network "
              "(or behind an HTTPS proxy).", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
