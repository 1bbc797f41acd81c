"""The committed generated code matches the protos."""

from recsys.common import protogen


def test_generated_code_is_fresh():
    assert protogen.stale_files() == [], "run `make protos`"


def test_stale_code_is_detected(tmp_path):
    out = tmp_path / "v1"
    protogen.generate(out)
    (out / "events_pb2.py").write_text("# edited by hand\n")
    (out / "orphan_pb2.py").write_text("")
    assert protogen.stale_files(out) == ["events_pb2.py", "orphan_pb2.py"]
