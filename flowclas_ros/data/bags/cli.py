"""``flowclas-bag``: write a rosbag2 from a folder dataset (images + optional masks)."""

from __future__ import annotations

import argparse
import sys

from flowclas_ros.data.bags.writer import (
    COMPRESSED_FORMATS,
    DEFAULT_START_NS,
    STORAGES,
    write_bag_from_folder,
)
from flowclas_ros.data.images.codec import COLOR_ENCODINGS


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(
        prog="flowclas-bag",
        description=(
            "Write ROOT/images/<stem>.png|jpg (and ROOT/masks/<stem>.png, 0 normal / 1 anomaly / "
            "255 ignore) into a rosbag2, one frame per image in stem order, masks on a second topic "
            "with the same header stamp."
        ),
    )
    parser.add_argument("--data", required=True, metavar="ROOT", help="dataset root folder")
    parser.add_argument(
        "--out", required=True, metavar="BAG", help="bag directory to create (must not exist)"
    )
    parser.add_argument(
        "--image-topic", default="/camera/image_raw", help="image topic (default: %(default)s)"
    )
    parser.add_argument(
        "--mask-topic", default="/camera/anomaly_mask", help="mask topic, '' for none (default: %(default)s)"
    )
    parser.add_argument(
        "--rate", type=float, default=10.0, metavar="HZ", help="frame rate (default: %(default)s)"
    )
    parser.add_argument(
        "--encoding",
        default="rgb8",
        choices=[*COLOR_ENCODINGS, *COMPRESSED_FORMATS],
        metavar="ENC",
        help="sensor_msgs/Image encoding, or jpeg/png for CompressedImage (default: %(default)s); "
        f"one of: {', '.join([*COLOR_ENCODINGS, *COMPRESSED_FORMATS])}",
    )
    parser.add_argument("--storage", default="sqlite3", choices=list(STORAGES), help="(default: %(default)s)")
    parser.add_argument("--frame-id", default="camera", help="header.frame_id (default: %(default)s)")
    parser.add_argument(
        "--start-time",
        type=float,
        default=DEFAULT_START_NS / 1e9,
        metavar="SEC",
        help="stamp of the first frame in seconds since the epoch (default: %(default)s)",
    )
    parser.add_argument("--jpeg-quality", type=int, default=95, help="(default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the tool; returns the exit status (0 ok, 1 bad input)."""
    args = build_parser().parse_args(argv)
    try:
        summary = write_bag_from_folder(
            args.data,
            args.out,
            image_topic=args.image_topic,
            mask_topic=args.mask_topic or None,
            rate_hz=args.rate,
            encoding=args.encoding,
            storage=args.storage,
            frame_id=args.frame_id,
            start_ns=round(args.start_time * 1e9),
            jpeg_quality=args.jpeg_quality,
            progress=True,
        )
    except (OSError, ValueError) as err:
        print(f"flowclas-bag: error: {err}", file=sys.stderr)
        return 1
    print(
        f"wrote {summary.path}: {summary.n_images} images on {args.image_topic} ({args.encoding}), "
        f"{summary.n_masks} masks{f' on {args.mask_topic}' if args.mask_topic else ''}, {args.storage}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
