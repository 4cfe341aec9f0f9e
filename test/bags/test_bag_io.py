"""rosbags reading and writing: round trips, info, ROS 1 bags, and one clear line for bad bags."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from bag_helpers.bags import (
    SECOND,
    T0,
    mixed_messages,
    run_eval,
    write_messages,
)

from moa_depth_ros.bags.io import BagError, BagReader, open_writer
from moa_depth_ros.cli.bag import main
from moa_depth_ros.msgs.stamps import header_stamp_ns


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_round_trip_keeps_data_order_and_stamps(tmp_path: Path, storage: str) -> None:
    written = mixed_messages(5)
    write_messages(tmp_path / "bag", written, storage)
    with BagReader(tmp_path / "bag") as reader:
        assert reader.summary().storage == storage
        read = [(m.topic, m.timestamp_ns, reader.decode(m)) for m in reader.messages()]
    assert [(t, ts) for t, ts, _ in read] == [(t, ts) for t, ts, _ in written]
    for (_, _, original), (_, _, back) in zip(written, read, strict=True):
        assert header_stamp_ns(back) == header_stamp_ns(original)
        if hasattr(original, "data"):
            np.testing.assert_array_equal(back.data, original.data)
        else:
            np.testing.assert_array_equal(back.k, original.k)


def test_info_lists_topics_types_counts_and_duration(tmp_path: Path, capsys) -> None:
    write_messages(tmp_path / "bag", mixed_messages(4), "sqlite3")
    assert main(["info", str(tmp_path / "bag")]) == 0
    out = capsys.readouterr().out
    assert "storage:   sqlite3" in out
    assert "duration:  0.300 s" in out
    assert "messages:  8" in out
    assert "/camera/camera_info  sensor_msgs/msg/CameraInfo" in out
    assert "/camera/image_raw    sensor_msgs/msg/Image" in out
    assert out.count("      4 msgs") == 2


def test_info_reads_a_ros1_bag(tmp_path: Path, capsys) -> None:
    from rosbags.rosbag1 import Writer as Ros1Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS1_NOETIC)
    string = store.types["std_msgs/msg/String"]
    with Ros1Writer(tmp_path / "old.bag") as writer:
        connection = writer.add_connection("/chatter", string.__msgtype__, typestore=store)
        for i in range(3):
            data = store.serialize_ros1(string(data=f"hello {i}"), string.__msgtype__)
            writer.write(connection, T0 + i * SECOND, data)
    assert main(["info", str(tmp_path / "old.bag")]) == 0
    out = capsys.readouterr().out
    assert "storage:   rosbag1" in out and "duration:  2.000 s" in out
    assert "/chatter  std_msgs/msg/String" in out and "3 msgs" in out


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_truncated_bag_is_one_clear_line(tmp_path: Path, storage: str, capsys) -> None:
    write_messages(tmp_path / "bag", mixed_messages(20), storage)
    data_file = next(p for p in (tmp_path / "bag").iterdir() if p.suffix in (".mcap", ".db3"))
    data_file.write_bytes(data_file.read_bytes()[: data_file.stat().st_size // 2])
    code = main(["info", str(tmp_path / "bag")])
    if code == 0:  # sqlite may open a half file; reading it must then fail cleanly
        code, _ = run_eval(tmp_path / "bag", tmp_path / "out")
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("moa-depth-bag: error: cannot ") and f"'{tmp_path / 'bag'}'" in err
    assert "\n" not in err


def test_garbage_and_missing_bags(tmp_path: Path, capsys) -> None:
    (tmp_path / "junk.mcap").write_bytes(b"not a bag at all" * 10)
    assert main(["info", str(tmp_path / "junk.mcap")]) == 2
    assert "cannot open bag" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "nope")]) == 2
    assert f"bag '{tmp_path / 'nope'}' does not exist" in capsys.readouterr().err


def test_bag_error_is_raised_for_unknown_types(tmp_path: Path) -> None:
    unknown = "my_msgs/msg/Thing is not in the rosbags"
    with open_writer(tmp_path / "bag") as writer, pytest.raises(BagError, match=unknown) as info:
        writer.add_topic("/thing", "my_msgs/msg/Thing")
    assert f"bag '{tmp_path / 'bag'}'" in str(info.value)


@pytest.mark.parametrize(("name", "storage"), [("one.mcap", "mcap"), ("one.db3", "sqlite3")])
def test_a_single_file_bag_stopped_half_way_is_that_file_and_readable(
    tmp_path: Path, name: str, storage: str
) -> None:
    """The writer knows its single-file target: leaving the block on an error still closes the
    bag, moves the file out of its hidden directory and leaves nothing else behind."""
    from moa_depth_ros.msgs.rosbags_messages import serialize

    written = mixed_messages(3)
    target = tmp_path / name
    with pytest.raises(KeyboardInterrupt), open_writer(target, storage) as writer:
        assert writer.path == target
        connections: dict = {}
        for index, (topic, time_ns, message) in enumerate(written):
            if index == 4:
                raise KeyboardInterrupt  # Ctrl-C while recording
            if topic not in connections:
                connections[topic] = writer.add_topic(topic, message.__msgtype__)
            writer.write(connections[topic], time_ns, serialize(message))
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    assert writer.close() == target  # closing again changes nothing
    with BagReader(target) as reader:
        assert [m.timestamp_ns for m in reader.messages()] == [t for _, t, _ in written[:4]]
        assert reader.summary().storage == storage


def test_mcap_written_here_carries_crcs_and_corruption_is_an_error(tmp_path: Path, capsys) -> None:
    from moa_depth_ros.bags import mcap_crc

    write_messages(tmp_path / "bag", mixed_messages(40), "mcap")
    [mcap] = (tmp_path / "bag").glob("*.mcap")
    check = mcap_crc.verify(mcap)
    assert check.chunks >= 1 and check.chunks_with_crc == check.chunks and check.data_section_crc
    assert main(["info", str(tmp_path / "bag")]) == 0
    assert "checksums: CRC-32 verified" in capsys.readouterr().out
    data = bytearray(mcap.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 2048] = bytes(b ^ 0xFF for b in data[middle : middle + 2048])
    mcap.write_bytes(bytes(data))
    code, _ = run_eval(tmp_path / "bag", tmp_path / "out")
    err = capsys.readouterr().err.strip()
    assert (
        code == 2 and "is corrupt" in err and "CRC mismatch" in err and len(err.splitlines()) == 1
    )
