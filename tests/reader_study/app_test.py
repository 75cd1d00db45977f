"""reader_study.app: the reader flow, resume and restart, and that readers cannot reach what is not theirs."""
import os
import re
import sqlite3
import threading

import pytest

from jaxmedgan.reader_study import app as app_lib
from jaxmedgan.reader_study import db
from tests.reader_study import current_item, make_study, start_reader, truths


@pytest.fixture()
def study_dir(tmp_path):
    return make_study(tmp_path, num=6)


@pytest.fixture()
def client(study_dir):
    app = app_lib.create_app(study_dir)
    app.testing = True  # any exception in a view fails the test instead of becoming a 500
    return app.test_client()


def _answers(study_dir):
    conn = db.connect(os.path.join(study_dir, db.DB_NAME))
    try:
        return [dict(r) for r in db.answers(conn)]
    finally:
        conn.close()


def _answer(client, token, item_id, answer="real", **extra):
    return client.post(f"/r/{token}/answer", data={"item_id": item_id, "answer": answer, **extra})


def test_a_reader_answers_every_image_in_their_own_order(client, study_dir):
    assert b"6 images" in client.get("/").data
    token = start_reader(client, "Dr. Ada")
    seen = []
    for k in range(1, 7):
        page = client.get(f"/r/{token}").data
        assert f"Image {k} of 6".encode() in page
        item = current_item(client, token)
        img = client.get(f"/r/{token}/image/{item}")
        assert img.status_code == 200 and img.mimetype == "image/png" and img.data.startswith(b"\x89PNG")
        resp = _answer(client, token, item, "synthetic" if k % 2 else "real", confidence=str(k % 5 + 1),
                       finding="nodule, left" if k == 1 else "")
        assert resp.status_code == 303 and resp.headers["Location"].endswith(f"/r/{token}")
        seen.append(item)
    assert sorted(seen) == sorted(truths(study_dir))
    done = client.get(f"/r/{token}")
    assert b"answered all 6 images" in done.data and current_item(client, token) is None
    rows = _answers(study_dir)
    assert [r["item_id"] for r in rows] == seen and rows[0]["finding"] == "nodule, left"
    assert [r["confidence"] for r in rows] == [2, 3, 4, 5, 1, 2]

    other = start_reader(client, "Dr. Bob")  # a second reader gets a different, stored order
    order_b = [current_item(client, other)]
    assert current_item(client, other) == order_b[0]  # stable between requests
    for _ in range(5):
        _answer(client, other, order_b[-1])
        order_b.append(current_item(client, other))
    assert sorted(order_b) == sorted(seen) and order_b != seen


def test_resume_by_link_and_server_restart_lose_nothing(study_dir):
    app1 = app_lib.create_app(study_dir)
    c1 = app1.test_client()
    token = start_reader(c1, "Dr. Ada")
    first = []
    for _ in range(3):
        first.append(current_item(c1, token))
        assert _answer(c1, token, first[-1]).status_code == 303
    nxt = current_item(c1, token)
    del app1, c1  # "server restart": a new app instance on the same folder
    c2 = app_lib.create_app(study_dir).test_client()
    page = c2.get(f"/r/{token}").data
    assert b"Image 4 of 6" in page and current_item(c2, token) == nxt
    assert [r["item_id"] for r in _answers(study_dir)] == first
    conn = sqlite3.connect(os.path.join(study_dir, db.DB_NAME))
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


TRAVERSALS = [
    "/image/..%2f..%2fstudy.sqlite", "/image/../study.sqlite", "/images/study.sqlite", "/study.sqlite",
    "/static/..%2fstudy.sqlite", "/static/../../study.sqlite", "/static/..%2f..%2f..%2fstudy.sqlite",
    "/r/{t}/image/..%2f..%2fstudy.sqlite", "/r/{t}/image/..%2fstudy.sqlite", "/r/{t}/image/%2e%2e%2fstudy.sqlite",
    "/r/{t}/image/../../study.sqlite", "/r/{t}/image/{item}.png", "/r/{t}/image/{item}%00",
    "/r/{t}/image/..", "/r/{t}/image/%2e%2e", "/r/{t}/image/0000000000000000", "/r/{t}/image/{ITEM}",
    "/r/{t}/image/study.sqlite", "/r/..%2f..%2fstudy.sqlite", "/admin/..%2fstudy.sqlite",
]


@pytest.mark.parametrize("url", TRAVERSALS)
def test_path_traversal_and_unknown_ids_are_404(client, url):
    token = start_reader(client, "Eve")
    item = current_item(client, token)
    resp = client.get(url.format(t=token, item=item, ITEM=item.upper()))
    assert resp.status_code == 404, (url, resp.status_code)
    assert b"SQLite format" not in resp.data


def test_tokens_are_per_reader_and_unguessable(client, study_dir):
    a, b = start_reader(client, "A"), start_reader(client, "B")
    assert a != b and len(a) == 43
    item_a = current_item(client, a)
    _answer(client, a, item_a, "synthetic")
    assert b"Image 1 of 6" in client.get(f"/r/{b}").data  # B does not see A's progress
    item_b = current_item(client, b)
    assert _answer(client, b, item_a, "real").status_code == 303  # B answers for B only
    rows = {(r["reader"], r["item_id"]): r["answer"] for r in _answers(study_dir)}
    assert rows == {("A", item_a): "synthetic", ("B", item_a): "real"}
    assert item_b is not None
    tampered = a[:-1] + ("A" if a[-1] != "A" else "B")
    for bad in (tampered, "x", a + "x", "../" + a, "%2e%2e"):
        assert client.get(f"/r/{bad}").status_code == 404
        assert _answer(client, bad, item_a).status_code == 404
        assert client.get(f"/r/{bad}/image/{item_a}").status_code == 404
    assert len(_answers(study_dir)) == 2


@pytest.mark.parametrize("form, code", [
    ({"answer": "real"}, 404),                                               # no item id
    ({"item_id": "../../study.sqlite", "answer": "real"}, 404),
    ({"item_id": "0123456789abcdef", "answer": "real"}, 404),                # well-formed, unknown
    ({"item_id": "{item}"}, 400),                                            # no answer
    ({"item_id": "{item}", "answer": "maybe"}, 400),
    ({"item_id": "{item}", "answer": "fake"}, 400),                          # the value is 'synthetic'
    ({"item_id": "{item}", "answer": "real", "confidence": "6"}, 400),
    ({"item_id": "{item}", "answer": "real", "confidence": "0"}, 400),
    ({"item_id": "{item}", "answer": "real", "confidence": "high"}, 400),
    ({"item_id": "{item}", "answer": "real", "finding": "x" * 2001}, 400),
    ({"item_id": "{item}", "answer": "real", "finding": "bad\x00byte"}, 400),
])
def test_malformed_answers_are_4xx_and_store_nothing(client, study_dir, form, code):
    token = start_reader(client, "Mal")
    item = current_item(client, token)
    data = {k: v.format(item=item) if k == "item_id" else v for k, v in form.items()}
    resp = client.post(f"/r/{token}/answer", data=data)
    assert resp.status_code == code, resp.data
    assert _answers(study_dir) == []


def test_malformed_requests_never_500(client, study_dir):
    for name in ("", "   ", "x" * 101, "tab\there", "nul\x00"):
        assert client.post("/start", data={"name": name}).status_code == 400
    assert client.post("/start").status_code == 400
    token = start_reader(client, "Ok")
    item = current_item(client, token)
    assert client.get(f"/r/{token}/answer").status_code == 405
    assert client.post(f"/r/{token}/answer", data="garbage", content_type="application/json").status_code == 404
    assert client.post(f"/r/{token}/answer", data={"item_id": item, "answer": "real", "finding": "y" * 70000}
                       ).status_code == 413
    assert client.post(f"/r/{token}").status_code == 405
    assert client.get("/admin/").status_code == 404
    assert _answers(study_dir) == []


def test_duplicate_answers_are_idempotent_and_changes_are_409(client, study_dir):
    token = start_reader(client, "Dup")
    item = current_item(client, token)
    form = {"confidence": "4", "finding": "calcification"}
    assert _answer(client, token, item, "synthetic", **form).status_code == 303
    assert _answer(client, token, item, "synthetic", **form).status_code == 303  # resubmit: no change
    conflict = _answer(client, token, item, "real", **form)
    assert conflict.status_code == 409 and b"answers are final" in conflict.data
    assert _answer(client, token, item, "synthetic", confidence="2").status_code == 409
    rows = _answers(study_dir)
    assert len(rows) == 1 and (rows[0]["answer"], rows[0]["confidence"]) == ("synthetic", 4)


def test_cross_site_posts_are_refused_and_headers_set(client, study_dir):
    assert client.post("/start", data={"name": "X"}, headers={"Origin": "http://evil.example"}).status_code == 403
    assert client.post("/start", data={"name": "X"}, headers={"Origin": "http://localhost"}).status_code == 303
    token = start_reader(client, "Y")
    item = current_item(client, token)
    resp = client.post(f"/r/{token}/answer", data={"item_id": item, "answer": "real"},
                       headers={"Origin": "http://evil.example"})
    assert resp.status_code == 403 and _answers(study_dir) == []
    page = client.get(f"/r/{token}")
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["Referrer-Policy"] == "same-origin" and page.headers["Cache-Control"] == "no-store"
    assert page.headers["X-Frame-Options"] == "DENY"
    html = page.data.decode()
    assert "real_patient" not in html and not re.search(r"fake\d", html)  # no source names in the page
    assert study_dir not in html


def test_admin_page_needs_the_admin_token_and_escapes_names(client, study_dir):
    conn = db.connect(os.path.join(study_dir, db.DB_NAME))
    admin = db.meta(conn)["admin_token"]
    conn.close()
    token = start_reader(client, "<script>alert(1)</script>")
    assert b"<script>alert(1)</script>" not in client.get(f"/r/{token}").data
    truth = truths(study_dir)
    for _ in range(6):  # always right
        item = current_item(client, token)
        _answer(client, token, item, truth[item])
    assert client.get("/admin/" + "x" * 43).status_code == 404
    assert client.get(f"/admin/{token}").status_code == 404  # a reader token is not the admin token
    page = client.get(f"/admin/{admin}")
    assert page.status_code == 200
    html = page.data.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert" not in html
    assert re.search(r'class="accuracy">1\.000', html) and "6 of 6" in html
    csv_resp = client.get(f"/admin/{admin}/answers.csv")
    assert csv_resp.status_code == 200 and csv_resp.data.count(b"\n") == 7
    assert client.get(f"/admin/{token}/answers.csv").status_code == 404


def test_concurrent_readers_all_answers_stored(study_dir):
    app = app_lib.create_app(study_dir)
    tokens = [start_reader(app.test_client(), f"R{i}") for i in range(4)]
    errors = []

    def work(token):
        c = app.test_client()
        try:
            for _ in range(6):
                assert _answer(c, token, current_item(c, token), "real").status_code == 303
        except Exception as e:  # reported below: an assert in a thread would be lost
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in tokens]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(_answers(study_dir)) == 24


def test_create_app_names_a_missing_study(tmp_path):
    with pytest.raises(FileNotFoundError, match="study.sqlite' not found"):
        app_lib.create_app(str(tmp_path / "nothing"))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "study.sqlite").write_bytes(b"definitely not sqlite" * 100)
    with pytest.raises(ValueError, match="junk/study.sqlite' is not a reader-study database"):
        app_lib.create_app(str(tmp_path / "junk"))


def test_a_missing_image_file_is_404_not_500(client, study_dir):
    token = start_reader(client, "Z")
    item = current_item(client, token)
    os.remove(os.path.join(study_dir, "images", f"{item}.png"))
    resp = client.get(f"/r/{token}/image/{item}")
    assert resp.status_code == 404 and b"tell the study admin" in resp.data


def test_requests_for_another_host_name_are_refused(study_dir):
    # A DNS-rebinding page at http://evil.example:8000 resolves to 127.0.0.1: its requests (and their
    # Origin) name evil.example, which the Origin check alone would accept as same-origin.
    app = app_lib.create_app(study_dir, allowed_hosts=("127.0.0.1:8000", "localhost:8000"))
    c = app.test_client()
    assert c.get("/", headers={"Host": "127.0.0.1:8000"}).status_code == 200
    assert c.get("/", headers={"Host": "LOCALHOST:8000"}).status_code == 200
    assert c.get("/", headers={"Host": "evil.example:8000"}).status_code == 400
    assert c.get("/", headers={"Host": "127.0.0.1:9999"}).status_code == 400
    resp = c.post("/start", data={"name": "x"}, headers={"Host": "evil.example:8000",
                                                         "Origin": "http://evil.example:8000"})
    assert resp.status_code == 400 and db.readers(db.connect(os.path.join(study_dir, db.DB_NAME))) == []
