"""Corrections: POST /api/feedback through the app, the SQLite store, stats and the export."""

from __future__ import annotations

import io
import json
import sqlite3

import numpy as np
import pytest
from support.bars import write_bars_split
from support.servers import blank_png, drawing_png

from emnist.checkpoint import load_checkpoint
from feedback import store
from training import feedback as exporter
from training import train
from webapp import create_app

WRITER = "0123456789abcdef"


@pytest.fixture
def app(fake_torchserve, tmp_path):
    return create_app(
        {
            "INFERENCE_URL": fake_torchserve,
            "MANAGEMENT_URL": fake_torchserve,
            "FEEDBACK_DB": str(tmp_path / "feedback.sqlite3"),
            "FEEDBACK_MAX_PER_WRITER": 3,
            "FEEDBACK_MAX_ROWS": 5,
        }
    )


@pytest.fixture
def client(app):
    return app.test_client()


def send(client, png=None, **fields):
    data = {"label": "7", "writer": WRITER, "model": "emnist-cnn", "version": "1.0"}
    data.update(fields)
    if png is not None:
        data["image"] = (io.BytesIO(png), "drawing.png")
    return client.post("/api/feedback", data=data, content_type="multipart/form-data")


def stored(app) -> list[sqlite3.Row]:
    with store.opened(app.config["FEEDBACK_DB"]) as connection:
        return store.rows(connection)


def test_a_correction_is_stored_with_everything_the_issue_names(app, client):
    response = send(client, drawing_png("L"), label="o", predicted="0", charset="letters")
    assert response.status_code == 201, response.json
    assert response.json["label"] == "O" and not response.json["duplicate"]  # o is O's class
    (row,) = stored(app)
    assert row["id"] == response.json["id"]
    assert row["image_png"] == drawing_png("L") and len(row["pixels"]) == 28 * 28
    assert (row["label"], row["predicted"], row["charset"]) == ("O", "0", "letters")
    assert (row["model"], row["version"], row["writer"]) == ("emnist-cnn", "1.0", WRITER)
    probabilities = json.loads(row["probabilities"])  # asked of TorchServe again
    assert set(probabilities) == set("LI1C7") and row["created_at"].endswith("+00:00")
    assert np.frombuffer(row["pixels"], np.uint8).max() == 255
    # Nothing about the person but the page's random id.
    columns = set(row.keys())
    assert not {"ip", "remote_addr", "user_agent", "address"} & columns


def test_the_store_is_wal_with_full_sync(app, client):
    send(client, drawing_png())
    with store.opened(app.config["FEEDBACK_DB"]) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert connection.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_a_duplicate_returns_the_first_id_and_adds_no_row(app, client):
    first = send(client, drawing_png())
    again = send(client, drawing_png())
    assert again.status_code == 200 and again.json == {**first.json, "duplicate": True}
    assert len(stored(app)) == 1


@pytest.mark.parametrize(
    ("png", "fields", "status", "message"),
    [
        (None, {}, 400, "no image"),
        (b"not an image", {}, 400, "not a readable image"),
        (blank_png(), {}, 400, "blank"),
        ("png", {"label": "Ω"}, 400, "label must be"),
        ("png", {"label": "ab"}, 400, "label must be"),
        ("png", {"label": ""}, 400, "label must be"),
        ("png", {"writer": "me"}, 400, "writer"),
        ("png", {"writer": "../../etc/passwd"}, 400, "writer"),
        ("png", {"charset": "greek"}, 400, "unknown charset"),
        ("png", {"model": "m" * 101}, 400, "model and version are names"),
        ("png", {"model": "../predictions"}, 400, "model and version are names"),
        ("png", {"predicted": "p" * 101}, 400, "at most 100"),
    ],
)
def test_bad_corrections_get_a_4xx_with_a_message(app, client, png, fields, status, message):
    png = drawing_png() if png == "png" else png
    response = send(client, png, **fields)
    assert response.status_code == status
    assert message in response.json["message"]
    assert stored(app) == []


def test_a_body_over_the_limit_is_refused_before_it_is_read(app, client):
    response = send(client, b"\x89PNG" + b"0" * (3 * 1024 * 1024))
    assert response.status_code == 400 and "larger than" in response.json["message"]


def test_limits_answer_429_per_writer_and_507_for_the_store(app, client):
    for kind in ("T", "L", "T2"):
        png = drawing_png(kind[0]) + kind.encode()  # distinct bytes, same readable picture
        assert send(client, png).status_code == 201
    refused = send(client, drawing_png() + b"x")
    assert refused.status_code == 429 and "most kept" in refused.json["message"]
    other = "fedcba9876543210"
    assert send(client, drawing_png(), writer=other).status_code == 201
    assert send(client, drawing_png("L"), writer=other).status_code == 201
    full = send(client, drawing_png() + b"y", writer="aaaaaaaaaaaaaaaa")
    assert full.status_code == 507 and "full" in full.json["message"]
    assert len(stored(app)) == 5


def test_the_server_can_turn_feedback_off(fake_torchserve, tmp_path):
    app = create_app(
        {
            "INFERENCE_URL": fake_torchserve,
            "MANAGEMENT_URL": fake_torchserve,
            "FEEDBACK": False,
            "FEEDBACK_DB": str(tmp_path / "off.sqlite3"),
        }
    )
    response = send(app.test_client(), drawing_png())
    assert response.status_code == 403 and "turned off" in response.json["message"]
    assert not (tmp_path / "off.sqlite3").exists()
    assert 'data-feedback="off"' in app.test_client().get("/").get_data(as_text=True)


def test_a_correction_is_kept_when_torchserve_is_down(tmp_path):
    url = "http://127.0.0.1:9"  # discard port: nothing answers
    app = create_app(
        {"INFERENCE_URL": url, "MANAGEMENT_URL": url, "FEEDBACK_DB": str(tmp_path / "f.db")}
    )
    assert send(app.test_client(), drawing_png()).status_code == 201
    (row,) = stored(app)
    assert row["probabilities"] is None


def test_stats_and_an_export_split_by_writer(app, client, tmp_path, capsys):
    writers = [f"writer{i:02d}xxxxxxxx" for i in range(5, 10)]  # 07 and 09 hash into the fifth
    app.config["FEEDBACK_MAX_ROWS"] = 100
    for i, writer in enumerate(writers):
        for label, kind in (("7", "T"), ("L", "L")):
            png = drawing_png(kind) + f"{i}".encode()
            assert send(client, png, label=label, writer=writer).status_code == 201
    db = app.config["FEEDBACK_DB"]
    counts = exporter.main(["--db", db, "stats"])
    assert counts["corrections"] == 10 and counts["per_class"] == {"7": 5, "L": 5}
    assert counts["per_writer"] == {w: 2 for w in writers}
    manifest = exporter.main(["--db", db, "export", "--out", str(tmp_path / "export")])
    parts = manifest["parts"]
    assert parts["train"]["images"] + parts["heldout"]["images"] == 10
    assert set(parts["train"]["writers"]).isdisjoint(parts["heldout"]["writers"])
    assert parts["heldout"]["writers"] == ["writer07xxxxxxxx", "writer09xxxxxxxx"]
    # Whether a writer is held out depends on that writer alone: more writers change nothing.
    more = exporter.split_writers([*writers, *(f"other{i:03d}xxxxxxx" for i in range(50))], 0.2)
    assert more & set(writers) == {"writer07xxxxxxxx", "writer09xxxxxxxx"}
    images, names, read_back = exporter.load_export(tmp_path / "export", "heldout")
    assert images.shape == (4, 28, 28) and sorted(names) == ["7", "7", "L", "L"]
    assert read_back["database_sha256"] == manifest["database_sha256"]
    mapping = (tmp_path / "export" / "feedback-mapping.txt").read_text().splitlines()
    assert mapping[0] == "0 48" and len(mapping) == 47
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".export-")]
    assert leftovers == []  # written in a temporary folder, renamed whole


def test_training_reads_the_export(app, client, tmp_path):
    app.config["FEEDBACK_MAX_ROWS"] = 100
    for i in range(4):
        writer = f"trainer{i:02d}xxxxxxx"
        assert (
            send(client, drawing_png("L") + bytes([i]), label="1", writer=writer).status_code == 201
        )
    exporter.export(app.config["FEEDBACK_DB"], tmp_path / "export")
    (tmp_path / "bars").mkdir()
    root = write_bars_split(tmp_path / "bars")  # classes 0-3: "1" is one of them
    argv = ["--arch", "cnn-seed", "--split", "digits", "--data-root", str(root), "--epochs", "1"]
    argv += [
        "--out",
        str(tmp_path / "run"),
        "--no-progress",
        "--feedback",
        str(tmp_path / "export"),
    ]
    train.main(argv)
    recorded = load_checkpoint(tmp_path / "run" / "best.pt")["data"]["feedback"]
    trained = [f"trainer{i:02d}xxxxxxx" for i in range(4)]
    trained = [w for w in trained if not exporter.held_out(w, 0.2)]
    assert recorded["images"] == len(trained) > 0 and recorded["writers"] == sorted(trained)
    assert len(recorded["database_sha256"]) == 64


@pytest.mark.parametrize(
    "headers",
    [{"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}],
    ids=["other-origin", "cross-site"],
)
def test_another_sites_page_cannot_write_corrections(app, client, headers):
    data = {"label": "7", "writer": WRITER, "image": (io.BytesIO(drawing_png()), "d.png")}
    response = client.post("/api/feedback", data=data, headers=headers)
    assert response.status_code == 403 and "own page" in response.json["message"]
    same = {"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"}
    data["image"] = (io.BytesIO(drawing_png()), "d.png")
    assert client.post("/api/feedback", data=data, headers=same).status_code == 201
    assert len(stored(app)) == 1


def test_an_export_never_replaces_what_is_not_an_export(app, client, tmp_path):
    send(client, drawing_png())
    db = app.config["FEEDBACK_DB"]
    with pytest.raises(SystemExit, match="not an earlier export"):
        exporter.export(db, tmp_path)  # the folder holding the database itself
    assert (tmp_path / "feedback.sqlite3").exists()
