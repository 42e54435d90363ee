"""engage/files.py: a file written atomically is all old or all new, and leaves no temporary file."""

from __future__ import annotations

import pytest

from engage.files import write_atomically


@pytest.mark.parametrize("durable", [True, False])
def test_text_bytes_and_chunks_are_written_whole(tmp_path, durable):
    target = tmp_path / "sub" / "out.ndjson"
    write_atomically(target, "é\n", durable)
    assert target.read_text() == "é\n"
    write_atomically(target, b"\x00\xff", durable)
    assert target.read_bytes() == b"\x00\xff"
    write_atomically(target, (bytes([i]) * 3 for i in range(4)), durable)
    assert target.read_bytes() == b"\x00\x00\x00\x01\x01\x01\x02\x02\x02\x03\x03\x03"
    assert [p.name for p in target.parent.iterdir()] == ["out.ndjson"]


def test_a_write_that_fails_half_way_keeps_the_old_content_and_no_temporary_file(tmp_path):
    target = tmp_path / "CURRENT"
    write_atomically(target, "old")

    def chunks():
        yield b"new, first half"
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        write_atomically(target, chunks())
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["CURRENT"]
