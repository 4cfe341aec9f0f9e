"""Publisher process for the node tests: sends images (+ camera_info) on command.

Runs as its own process (``python test/ros_helpers/image_publisher.py ...``) so the node is
exercised across processes, as on a robot. Commands are JSON lines on stdin, each answered by
one JSON line on stdout:

* ``{"op": "wait_matched", "timeout": s}`` → ``{"ok": bool}``: the image topic has a subscriber.
* ``{"op": "frames", "stamps": [ns, ...], "width": w, "height": h, "camera_info": bool,
  "period": s, "image_every": n, "info_size": [w, h]}`` → ``{"ok": true}``: camera_info (same
  stamp; of ``info_size`` when given) then the image, per stamp; the image only for every n-th
  stamp (default 1), as when a transport loses large messages.
* ``{"op": "fuzz", "count": n, "seed": k}`` → ``{"ok": bool, "sent": n}``: malformed images
  (raw) or undecodable payloads (compressed); ok when every one was acknowledged (reliable).
* ``{"op": "png_bomb", "side": n}`` → ``{"ok": true, "bytes": b}``: a real n×n grey PNG (a few
  KB that decode to n² bytes) on the compressed topic.
* ``{"op": "exit"}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the test/ directory

import rclpy  # noqa: E402
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: E402

from ros_helpers import frames  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--image-topic", required=True)
    parser.add_argument("--info-topic", required=True)
    parser.add_argument("--transport", choices=("raw", "compressed"), default="raw")
    parser.add_argument("--reliability", choices=("reliable", "best_effort"), default="reliable")
    parser.add_argument("--depth", type=int, default=1)
    parser.add_argument("--frame-id", default=frames.FRAME_ID)
    args = parser.parse_args()

    rclpy.init()
    node = rclpy.create_node("test_image_publisher")
    qos = QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=args.depth,
        reliability=ReliabilityPolicy.RELIABLE
        if args.reliability == "reliable"
        else ReliabilityPolicy.BEST_EFFORT,
    )
    compressed = args.transport == "compressed"
    image_type = CompressedImage if compressed else Image
    image_pub = node.create_publisher(image_type, args.image_topic, qos)
    info_pub = node.create_publisher(CameraInfo, args.info_topic, qos)
    make_image = frames.compressed_msg if compressed else frames.image_msg

    for line in sys.stdin:
        command = json.loads(line)
        op = command["op"]
        reply: dict = {"ok": True}
        if op == "exit":
            break
        if op == "wait_matched":
            deadline = time.monotonic() + command.get("timeout", 30.0)
            while image_pub.get_subscription_count() == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            reply["ok"] = image_pub.get_subscription_count() > 0
        elif op == "frames":
            width, height = command["width"], command["height"]
            info_width, info_height = command.get("info_size", (width, height))
            every = command.get("image_every", 1)
            for index, stamp in enumerate(command["stamps"]):
                if command.get("camera_info", True):
                    info_pub.publish(
                        frames.camera_info(stamp, info_width, info_height, args.frame_id)
                    )
                if index % every == 0:
                    image_pub.publish(make_image(stamp, width, height, args.frame_id))
                time.sleep(command.get("period", 0.0))
        elif op == "fuzz":
            count, seed = command["count"], command.get("seed", 0)
            bad = (
                frames.garbage_compressed(count, seed)
                if compressed
                else frames.malformed_images(count, seed)
            )
            for msg in bad:
                image_pub.publish(msg)
            reply["sent"] = len(bad)
            if args.reliability == "reliable":
                reply["ok"] = image_pub.wait_for_all_acked(rclpy.duration.Duration(seconds=30))
        elif op == "png_bomb" and compressed:
            msg = frames.png_bomb(command.get("side", 9000))
            image_pub.publish(msg)
            reply["bytes"] = len(msg.data)
            if args.reliability == "reliable":
                reply["ok"] = image_pub.wait_for_all_acked(rclpy.duration.Duration(seconds=30))
        else:
            reply = {"ok": False, "error": f"unknown op {op!r}"}
        print(json.dumps(reply), flush=True)

    node.destroy_node()
    rclpy.try_shutdown()


if __name__ == "__main__":
    main()
