"""Names derived from topics: shortened deterministically, never shared."""

from __future__ import annotations

from pathlib import Path

from datalogger.names import file_name, sql_identifier, topic_from_dir, write_topic_file


def test_short_names_are_kept_and_long_ones_shortened_with_a_hash() -> None:
    assert file_name("green") == "green"
    assert file_name("a" * 200) == "a" * 200
    long = "a" * 201
    short = file_name(long)
    assert len(short) == 200 and short.startswith("a" * 183 + "~")
    assert file_name(long) == short  # deterministic
    assert len((short + ".dl.lock").encode()) <= 255


def test_two_long_topics_differing_only_at_the_end_never_collide() -> None:
    one, two = "x" * 254 + "1", "x" * 254 + "2"
    assert file_name(one) != file_name(two)
    assert sql_identifier(one) != sql_identifier(two)
    # and a shortened name is never the plain name of another topic ("~" is not a topic character)
    assert "~" in file_name(one) and "~" in sql_identifier(one)


def test_sql_identifiers_fit_postgresql() -> None:
    assert sql_identifier("t" * 63) == "t" * 63
    name = sql_identifier("t" * 64)
    assert len(name.encode()) == 63 and name != "t" * 63
    assert len(sql_identifier("é" * 40).encode()) <= 63  # cut on a character boundary


def test_directories_tell_their_topic(tmp_path: Path) -> None:
    long = "topic." + "y" * 240
    directory = tmp_path / file_name(long)
    directory.mkdir()
    write_topic_file(directory, long)
    assert topic_from_dir(directory) == long
    plain = tmp_path / "green"
    plain.mkdir()
    write_topic_file(plain, "green")
    assert not (plain / "topic").exists()
    assert topic_from_dir(plain) == "green"
    stray = tmp_path / "x~0123456789abcdef"
    stray.mkdir()
    assert topic_from_dir(stray) is None
