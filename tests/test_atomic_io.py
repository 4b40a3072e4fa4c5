"""diffface.atomic_io: a file exists whole (old or new content) or not at all; no temporary files stay behind."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest

from diffface.atomic_io import (TEMPORARY_GLOB, atomic_write, temporary_path, write_bytes_atomic,
                                write_text_atomic)


def _leftovers(folder):
    return sorted(p.name for p in folder.glob(TEMPORARY_GLOB))


def test_temporary_path_is_hidden_beside_the_target_and_unique_per_process(tmp_path):
    tmp = temporary_path(tmp_path / "sub" / "report.json")
    assert tmp.parent == tmp_path / "sub"
    assert tmp.name == f".report.json.{socket.gethostname()}.{os.getpid()}.tmp"
    assert tmp.match(TEMPORARY_GLOB)


def test_write_text_and_bytes_create_parents_and_return_the_path(tmp_path):
    target = tmp_path / "a" / "b" / "note.txt"
    assert write_text_atomic(target, "héllo\n") == target
    assert target.read_bytes() == "héllo\n".encode("utf-8")
    blob = tmp_path / "blob.bin"
    assert write_bytes_atomic(str(blob), bytes(range(256))) == blob
    assert blob.read_bytes() == bytes(range(256))
    assert _leftovers(tmp_path) == [] and _leftovers(target.parent) == []


def test_overwrite_replaces_the_content_whole(tmp_path):
    target = tmp_path / "data.txt"
    write_text_atomic(target, "old content that is longer")
    write_text_atomic(target, "new")
    assert target.read_text() == "new"  # no tail of the longer old content
    assert _leftovers(tmp_path) == []


def test_target_keeps_old_content_until_the_block_ends(tmp_path):
    target = tmp_path / "data.txt"
    target.write_text("old")
    with atomic_write(target, binary=False) as handle:
        handle.write("new")
        handle.flush()
        assert target.read_text() == "old"  # the write goes to the temporary file
        assert temporary_path(target).read_text() == "new"
    assert target.read_text() == "new"
    assert _leftovers(tmp_path) == []


def test_an_error_during_the_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "data.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write(target) as handle:
            handle.write(b"partial new")
            raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


def test_an_error_before_the_first_write_leaves_no_file(tmp_path):
    target = tmp_path / "never.txt"
    with pytest.raises(KeyboardInterrupt):  # BaseException too (Ctrl-C)
        with atomic_write(target, binary=False) as handle:
            handle.write("x")
            raise KeyboardInterrupt
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_writing_text_to_a_binary_handle_fails_cleanly(tmp_path):
    target = tmp_path / "x.bin"
    with pytest.raises(TypeError):
        with atomic_write(target) as handle:  # binary by default
            handle.write("text")
    assert not target.exists() and _leftovers(tmp_path) == []


def test_a_rename_that_fails_removes_the_temporary(tmp_path):
    target = tmp_path / "folder"
    target.mkdir()
    (target / "inside").write_text("kept")  # os.replace cannot replace a non-empty folder with a file
    with pytest.raises(OSError):
        write_text_atomic(target, "text")
    assert (target / "inside").read_text() == "kept"
    assert _leftovers(tmp_path) == []


def test_the_handle_works_with_writers_given_the_open_file(tmp_path):
    target = tmp_path / "array.npy"
    values = np.arange(12, dtype=np.float32).reshape(3, 4)
    with atomic_write(target) as handle:
        np.save(handle, values)
    np.testing.assert_array_equal(np.load(target), values)
    assert _leftovers(tmp_path) == []
