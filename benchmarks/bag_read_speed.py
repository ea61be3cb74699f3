"""Reading training frames from a rosbag2 vs the same frames from a folder, side by side (issue 24).

Training reads every frame once per epoch (``OETrainDataset.load_inlier``). A folder decodes its
PNG / JPEG file each time. A bag (``training/bag_frames.py``) is decoded once, when training
starts, with the node's codec into a memory-mapped scratch file, and each later read is a copy.
This prints, for the same frames (best of ``--repeat`` runs), the one-off open cost, the frames/s
of one epoch of reads and the total for ``--epochs`` epochs (open included), for a lossless pair
(folder PNG vs sqlite3 bag of raw ``rgb8``) and a lossy pair (folder JPEG vs MCAP bag of JPEG
``CompressedImage``). Training reads a frame at least twice (``cache.pool_size`` OE variants, or
one read per epoch without the cache), so the total over 2+ epochs is the cost that matters.

Example::

    .venv/bin/python benchmarks/bag_read_speed.py --frames 60 --height 480 --width 640 --epochs 4
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import cv2

from flowclas_ros.data.bags.writer import write_bag_from_folder
from flowclas_ros.data.images.folder import FolderDataset
from flowclas_ros.runtime.cpu import cpu_model
from flowclas_ros.synthetic.synthetic_scenes import SceneConfig, SceneGenerator
from flowclas_ros.training.bag_frames import read_bag_frames
from flowclas_ros.training.config import BagConfig


def make_frames(work: Path, n: int, size: tuple[int, int]) -> dict[str, Path]:
    """A PNG and a JPEG folder of the same rendered frames, and the two bags written from them."""
    png, jpg = work / "png", work / "jpg"
    if not (png / "images").is_dir():
        gen = SceneGenerator(seed=7, cfg=SceneConfig(size=size))
        for folder in (png, jpg):
            (folder / "images").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            bgr = cv2.cvtColor(gen.frame("train", i).image, cv2.COLOR_RGB2BGR)
            cv2.imwrite(str(png / "images" / f"{i:05d}.png"), bgr)
            cv2.imwrite(str(jpg / "images" / f"{i:05d}.jpg"), bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
    bags = {"bag_rgb8": (png, "rgb8", "sqlite3"), "bag_jpeg": (jpg, "jpeg", "mcap")}
    out = {"png": png, "jpg": jpg}
    for name, (src, encoding, storage) in bags.items():
        if not (work / name).is_dir():
            write_bag_from_folder(src, work / name, mask_topic=None, encoding=encoding, storage=storage)
        out[name] = work / name
    return out


def time_source(path: Path, bag: bool, epochs: int) -> tuple[float, float, int]:
    """(open seconds, seconds per epoch of reads, frames)."""
    start = time.perf_counter()
    if bag:  # every frame: no rate gate, no static skipping, so both sides read the same frames
        data = read_bag_frames(path, BagConfig(max_rate_hz=0.0, skip_static=False), "data.train")
    else:
        data = FolderDataset(path)
    opened = time.perf_counter() - start
    per_epoch = []
    for _ in range(epochs):
        tick = time.perf_counter()
        for i in range(len(data)):
            data.load_image(i)
        per_epoch.append(time.perf_counter() - tick)
    return opened, sum(per_epoch) / len(per_epoch), len(data)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--epochs", type=int, default=4, help="epochs of reads timed (default 4)")
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs (a shared CPU is noisy)")
    parser.add_argument("--work", default="/tmp/flowclas_bag_read_speed", help="scratch folder")
    parser.add_argument("--fresh", action="store_true", help="re-render the frames and rewrite the bags")
    args = parser.parse_args()
    work = Path(args.work)
    if args.fresh:
        shutil.rmtree(work, ignore_errors=True)
    paths = make_frames(work, args.frames, (args.height, args.width))
    print(
        f"{args.frames} frames {args.width}x{args.height}, {args.epochs} epochs of reads, "
        f"best of {args.repeat}"
    )
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; load average {os.getloadavg()}")
    print(
        "| pair | source | open (s) | first epoch, open included (frames/s) | later epochs (frames/s) "
        f"| {args.epochs} epochs, open included (s) |"
    )
    print("|---|---|---|---|---|---|")
    for pair, folder, bag in (("lossless", "png", "bag_rgb8"), ("lossy", "jpg", "bag_jpeg")):
        totals, firsts = {}, {}
        for name in (folder, bag):
            runs = [time_source(paths[name], name.startswith("bag"), args.epochs) for _ in range(args.repeat)]
            opened, epoch, n = min(r[0] for r in runs), min(r[1] for r in runs), runs[0][2]
            totals[name] = opened + args.epochs * epoch
            label = {"png": "folder PNG", "jpg": "folder JPEG", "bag_rgb8": "sqlite3 bag, rgb8"}.get(
                name, "MCAP bag, JPEG CompressedImage"
            )
            firsts[name] = opened + epoch
            print(
                f"| {pair} | {label} | {opened:.2f} | {n / (opened + epoch):.0f} | {n / epoch:.0f} "
                f"| {totals[name]:.2f} |"
            )
        first, total = firsts[bag] / firsts[folder], totals[bag] / totals[folder]
        print(f"| {pair} | bag / folder time | | {first:.2f}x | | {total:.2f}x |")


if __name__ == "__main__":
    main()
