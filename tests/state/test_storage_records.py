"""The record envelope: checksums, framing, versions and migrations."""

import json

import pytest

from lion_nb.errors import (CheckpointCorruptError, CheckpointVersionError, SerializationError)
from lion_nb.state import RecordCodec, canonical_json


def test_encode_then_decode_round_trips_and_keeps_the_key():
    codec = RecordCodec()
    raw = codec.encode("runs/1", {"b": [1, 2.5, None], "a": "ü"})
    assert codec.decode(raw, "runs/1") == ("runs/1", {"a": "ü", "b": [1, 2.5, None]})
    assert json.loads(raw)["body"]["v"] == 1  # the envelope is itself plain JSON


def test_canonical_json_is_deterministic_and_refuses_nan():
    assert canonical_json({"b": 1, "a": [1, {"d": 2, "c": 3}]}) == b'{"a":[1,{"c":3,"d":2}],"b":1}'
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


def test_every_flipped_byte_is_detected_and_names_the_key():
    codec = RecordCodec()
    raw = codec.encode("k", {"value": 12345, "text": "hello"})
    for i in range(len(raw)):
        bad = bytearray(raw)
        bad[i] ^= 0x01
        with pytest.raises(CheckpointCorruptError) as info:
            codec.decode(bytes(bad), "k")
        assert info.value.key == "k"
        assert "'k'" in str(info.value)


@pytest.mark.parametrize("cut", [1, 10, 84, 85, -1, -5])
def test_truncated_record_is_corrupt(cut):
    raw = RecordCodec().encode("k", {"value": 1})
    with pytest.raises(CheckpointCorruptError, match="'k'"):
        RecordCodec().decode(raw[:cut], "k")


def test_empty_record_is_corrupt():
    with pytest.raises(CheckpointCorruptError, match="'k' is empty"):
        RecordCodec().decode(b"", "k")


def test_record_stored_under_another_key_is_corrupt():
    raw = RecordCodec().encode("a", {})
    with pytest.raises(CheckpointCorruptError, match="holds the record of key 'a'"):
        RecordCodec().decode(raw, "b")


def test_future_version_raises_version_error_with_version():
    raw = RecordCodec(version=3).encode("k", {"x": 1})
    with pytest.raises(CheckpointVersionError) as info:
        RecordCodec(version=1).decode(raw, "k")
    assert info.value.key == "k" and info.value.version == 3


def test_migrations_upgrade_old_records_step_by_step():
    old = RecordCodec(version=1).encode("k", {"name": "a"})
    codec = RecordCodec(version=3)
    codec.migrations.register(1, lambda d: {**d, "attempt": 1})

    @codec.migration(2)
    def rename(d):
        return {"title": d.pop("name"), **d}

    assert codec.decode(old, "k")[1] == {"title": "a", "attempt": 1}


def test_missing_migration_is_a_version_error():
    old = RecordCodec(version=1).encode("k", {})
    with pytest.raises(CheckpointVersionError, match="no migration from 1 to 2"):
        RecordCodec(version=2).decode(old, "k")


def test_registering_two_migrations_from_one_version_is_refused():
    codec = RecordCodec(version=2)
    codec.migrations.register(1, dict)
    with pytest.raises(ValueError):
        codec.migrations.register(1, dict)


def test_non_json_records_are_refused_before_any_write():
    with pytest.raises(SerializationError, match="'k'"):
        RecordCodec().encode("k", {"x": object()})
    with pytest.raises(SerializationError):
        RecordCodec().encode("k", ["not", "a", "dict"])
