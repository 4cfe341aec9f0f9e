"""Read and write bag files with ``rosbags`` (pure Python; no ROS install needed).

Reads rosbag2 (a directory with ``metadata.yaml``, or a bare ``.db3`` / ``.mcap`` file) and
ROS 1 ``.bag`` files through :class:`rosbags.highlevel.AnyReader`; writes rosbag2 in sqlite3 or
MCAP storage. Every failure to read a bag, whether at open or halfway through a truncated
file, becomes one :class:`BagError` whose text names the bag and the reason, so command-line
tools can print one line and exit instead of showing a traceback from deep inside rosbags.

Messages are deserialized by the bag's own embedded definitions where it has them (MCAP,
ROS 1, rosbag2 version 8+ sqlite3) and otherwise by the ROS 2 Kilted typestore.
"""

from __future__ import annotations

import sqlite3
import struct
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.rosbag1 import ReaderError as Ros1ReaderError
from rosbags.rosbag2 import ReaderError as Ros2ReaderError
from rosbags.rosbag2 import StoragePlugin, Writer, WriterError
from rosbags.serde import SerdeError
from rosbags.typesys import TypesysError

from moa_depth_ros.bags import mcap_crc
from moa_depth_ros.errors import one_line
from moa_depth_ros.msgs.image_codec import compressed_msg_to_rgb, image_msg_to_rgb
from moa_depth_ros.msgs.rosbags_messages import typestore

if TYPE_CHECKING:
    from rosbags.interfaces import Connection

__all__ = [
    "CAMERA_INFO",
    "COMPRESSED",
    "IMAGE",
    "STORAGES",
    "BagError",
    "BagMessage",
    "BagReader",
    "BagSummary",
    "BagWriter",
    "TopicSummary",
    "open_writer",
]

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"

STORAGES: dict[str, StoragePlugin] = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}

# What rosbags (and the sqlite3 / struct / OS layers under it) raise on a bag it cannot read:
# missing or garbage files, bad metadata, truncated records, corrupt chunks, undecodable data.
_READ_ERRORS = (
    AnyReaderError,
    Ros1ReaderError,
    Ros2ReaderError,
    SerdeError,
    TypesysError,
    sqlite3.Error,
    struct.error,
    OSError,
    EOFError,
    ValueError,
    KeyError,
    IndexError,
)


class BagError(Exception):
    """A bag that cannot be read or used; ``str()`` is one line naming the bag and the reason."""


@dataclass(frozen=True)
class TopicSummary:
    name: str
    msgtype: str
    count: int


@dataclass(frozen=True)
class BagSummary:
    path: Path
    storage: str  # "mcap", "sqlite3" or "rosbag1"
    message_count: int
    start_ns: int
    end_ns: int
    topics: tuple[TopicSummary, ...]

    @property
    def duration_s(self) -> float:
        return max(self.end_ns - self.start_ns, 0) / 1e9 if self.message_count else 0.0


@dataclass(frozen=True)
class BagMessage:
    """One stored message: its topic, type, bag (receive) time and serialized bytes."""

    topic: str
    msgtype: str
    timestamp_ns: int
    raw: bytes | memoryview
    index: int  # position among this topic's messages, in bag order


#: The rosbag2 storage of a storage file, by suffix (a single-file bag, read or written:
#: ``--out demo.mcap`` means that file, not a directory of that name).
_FILE_SUFFIXES = {".mcap": "mcap", ".db3": "sqlite3"}


def _storage_of(path: Path) -> str:
    if path.suffix == ".bag":
        return "rosbag1"
    if path.suffix in _FILE_SUFFIXES:
        return _FILE_SUFFIXES[path.suffix]
    files = {p.suffix for p in path.glob("*")} if path.is_dir() else set()
    return next((_FILE_SUFFIXES[s] for s in _FILE_SUFFIXES if s in files), "unknown")


class BagReader:
    """A bag opened for reading; use as a context manager.

    Raises:
        BagError: on open, and from :meth:`messages` / :meth:`decode` when the data turns out
            to be corrupt or truncated part way through.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._reader: AnyReader | None = None
        #: What the MCAP checksums of the bag said ("" for other storages).
        self.checksums = ""

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except _READ_ERRORS as exc:
            raise BagError(f"cannot {doing} bag '{self.path}': {one_line(exc)}") from exc

    def __enter__(self) -> BagReader:
        if not self.path.exists():
            raise BagError(f"bag '{self.path}' does not exist")
        self.checksums = self._verify_mcap()
        with self._errors("open"):
            reader = AnyReader([self.path], default_typestore=typestore())
            reader.open()
        self._reader = reader
        return self

    def _verify_mcap(self) -> str:
        """Check the MCAP files' CRCs before anything is read (rosbags skips the data
        section's); a summary for ``info``, BagError on a mismatch."""
        # A rosbag2 directory (even one named "x.mcap", as rosbags writes) or a bare .mcap file.
        if self.path.is_dir():
            files = sorted(self.path.glob("*.mcap"))
        else:
            files = [self.path] if self.path.suffix == ".mcap" else []
        if not files:
            return ""
        chunks = with_crc = 0
        for file in files:
            try:
                check = mcap_crc.verify(file)
            except (mcap_crc.McapCrcError, struct.error, OSError, ValueError) as exc:
                reason = f"{file.name} is corrupt: {one_line(exc)}"
                raise BagError(f"cannot open bag '{self.path}': {reason}") from exc
            chunks, with_crc = chunks + check.chunks, with_crc + check.chunks_with_crc
        if chunks and with_crc == chunks:
            return f"CRC-32 verified ({chunks} chunks)"
        return "no CRCs (written without them: corruption inside messages cannot be detected)"

    def __exit__(self, *exc_info: object) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            # Closing a half-read corrupt file can raise again; the first error is the news.
            with suppress(_READ_ERRORS):
                reader.close()

    @property
    def reader(self) -> AnyReader:
        if self._reader is None:
            raise BagError(f"bag '{self.path}' is not open")
        return self._reader

    @property
    def is_ros1(self) -> bool:
        return not self.reader.is2

    def topics(self) -> dict[str, TopicSummary]:
        """Topic name → type and message count, sorted by name."""
        return {
            name: TopicSummary(name, info.msgtype or "(mixed types)", info.msgcount)
            for name, info in sorted(self.reader.topics.items())
        }

    def summary(self) -> BagSummary:
        reader = self.reader
        count = reader.message_count
        return BagSummary(
            path=self.path,
            storage=_storage_of(self.path),
            message_count=count,
            start_ns=reader.start_time if count else 0,
            end_ns=reader.end_time if count else 0,
            topics=tuple(self.topics().values()),
        )

    def require_topic(self, topic: str, msgtypes: Iterable[str] | None = None) -> str:
        """The type of ``topic``; BagError listing the topics present when it is missing or has
        a type not in ``msgtypes``."""
        topics = self.topics()
        info = topics.get(topic)
        if info is None:
            present = ", ".join(f"{t.name} ({t.msgtype})" for t in topics.values()) or "none"
            raise BagError(
                f"topic '{topic}' is not in bag '{self.path}'; topics present: {present}"
            )
        allowed = tuple(msgtypes or ())
        if allowed and info.msgtype not in allowed:
            raise BagError(
                f"topic '{topic}' in bag '{self.path}' has type {info.msgtype}, "
                f"expected {' or '.join(allowed)}"
            )
        return info.msgtype

    def _connections(self, topics: Iterable[str] | None) -> list[Connection]:
        if topics is None:
            return list(self.reader.connections)
        wanted = set(topics)
        return [c for c in self.reader.connections if c.topic in wanted]

    def messages(self, topics: Iterable[str] | None = None) -> Iterator[BagMessage]:
        """Messages of ``topics`` (all when None) in bag-time order."""
        connections = self._connections(topics)
        if topics is not None and not connections:
            return
        counters: dict[str, int] = {}
        with self._errors("read"):
            for connection, timestamp, raw in self.reader.messages(connections=connections):
                index = counters.get(connection.topic, 0)
                counters[connection.topic] = index + 1
                yield BagMessage(connection.topic, connection.msgtype, timestamp, raw, index)

    def decode(self, message: BagMessage) -> Any:
        """Deserialize a message (rosbags dataclass; arrays such as ``data`` are numpy)."""
        with self._errors("decode a message of"):
            return self.reader.deserialize(message.raw, message.msgtype)

    def decode_rgb(self, message: BagMessage) -> Any:
        """An ``Image`` or ``CompressedImage`` message as H×W×3 uint8 RGB (ImageDecodeError
        when its pixels are malformed)."""
        msg = self.decode(message)
        if message.msgtype == COMPRESSED:
            return compressed_msg_to_rgb(msg)
        return image_msg_to_rgb(msg)

    def to_cdr(self, message: BagMessage) -> bytes:
        """The message as ROS 2 CDR bytes (converted from ROS 1 serialization if needed)."""
        if not self.is_ros1:
            return bytes(message.raw)
        with self._errors("convert a ROS 1 message of"):
            return bytes(self.reader.typestore.ros1_to_cdr(message.raw, message.msgtype))


class BagWriter:
    """A rosbag2 bag being written (from :func:`open_writer`). Leaving it as a context manager
    closes it (:meth:`close`), also when writing stopped half way: what was written is a
    readable bag.

    ``path`` is the bag as it was asked for: a bag directory, or one ``.mcap`` / ``.db3`` file,
    which rosbags (it writes directories only) writes into a hidden directory beside it; closing
    moves the file out."""

    def __init__(self, writer: Writer, path: Path) -> None:
        self._writer = writer
        self.path = path
        self._closed = False

    def add_topic(self, topic: str, msgtype: str) -> Connection:
        """Register ``topic`` with the Kilted definition of ``msgtype`` (embedded in the bag).

        Raises:
            BagError: a type the typestore does not know (a custom message package).
        """
        if msgtype not in typestore().fielddefs:
            raise BagError(
                f"cannot write topic '{topic}' to bag '{self.path}': message type {msgtype} is "
                "not in the rosbags ROS 2 Kilted typestore"
            )
        return self._writer.add_connection(topic, msgtype, typestore=typestore())

    def write(self, connection: Connection, time_ns: int, data: bytes | memoryview) -> None:
        """Store one serialized (CDR) message of ``connection`` at bag time ``time_ns``."""
        self._writer.write(connection, time_ns, data)

    def close(self) -> Path:
        """Finish the bag (once; later calls only return its path): MCAP files get their CRCs
        (rosbags leaves them zero) so that a later read detects corruption, and a single file
        is moved to ``path``. Returns ``path``."""
        if self._closed:
            return self.path
        self._closed = True
        self._writer.close()
        directory = Path(self._writer.path)
        for file in sorted(directory.glob("*.mcap")):
            mcap_crc.add_crcs(file)
        if directory == self.path:
            return self.path
        (stored,) = [p for p in directory.iterdir() if p.suffix == self.path.suffix]
        stored.replace(self.path)
        for leftover in directory.iterdir():  # metadata.yaml: a single file carries its own
            leftover.unlink()
        directory.rmdir()
        return self.path

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_writer(path: str | Path, storage: Literal["mcap", "sqlite3"] = "mcap") -> BagWriter:
    """A new, opened rosbag2 bag (format version 9, as Kilted writes); close it with
    :meth:`BagWriter.close` or use it as a context manager. ``path`` is a bag directory, or
    with a ``.mcap`` / ``.db3`` suffix one storage file (the readers here and ``ros2 bag`` take
    either).

    Raises:
        BagError: unknown storage, a suffix of the other storage, or the path exists already
            (rosbags never overwrites).
    """
    if storage not in STORAGES:
        raise BagError(f"unknown storage '{storage}' (expected one of: {', '.join(STORAGES)})")
    path = Path(path)
    single_file = path.suffix in _FILE_SUFFIXES
    if single_file and _FILE_SUFFIXES[path.suffix] != storage:
        raise BagError(f"cannot write bag '{path}': a {path.suffix} file is not {storage} storage")
    if single_file and path.exists():
        raise BagError(f"cannot write bag '{path}': it exists already")
    # A single file is written as a bag directory beside it, then moved out (BagWriter.close).
    directory = path.with_name(f".{path.name}.partial") if single_file else path
    try:
        writer = Writer(directory, version=Writer.VERSION_LATEST, storage_plugin=STORAGES[storage])
        writer.open()
    except (WriterError, OSError) as exc:
        raise BagError(f"cannot write bag '{path}': {one_line(exc)}") from exc
    return BagWriter(writer, path)
