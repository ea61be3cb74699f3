"""Speed of the image codec, the streaming metrics and bag reading at 640x480 (CPU).

Run: .venv/bin/python benchmarks/codec_metrics_speed.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from flowclas_ros.data.bags.frames import iter_bag_frames, write_bag_from_folder
from flowclas_ros.data.images.codec import decode_compressed, decode_image, encode_compressed, encode_image
from flowclas_ros.evaluation.metrics import PixelMetrics

H, W = 480, 640


def best_ms(fn, repeat: int = 30) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * min(times)


def main() -> None:
    cv2.setNumThreads(1)
    rng = np.random.default_rng(0)
    rgb = cv2.GaussianBlur(rng.integers(0, 256, (H, W, 3), dtype=np.uint8), (9, 9), 3)
    print(f"decode {W}x{H} (best of 30, 1 OpenCV thread):")
    for enc in ["rgb8", "bgr8", "rgba8", "mono8", "mono16", "bayer_rggb8", "yuv422", "yuyv"]:
        step, data = encode_image(rgb, enc, step_padding=64)  # padded rows
        print(f"  {enc:12s} {best_ms(lambda e=enc, st=step, d=data: decode_image(e, H, W, st, d)):7.3f} ms")
    for fmt in ["jpeg", "png"]:
        blob = encode_compressed(rgb, fmt, 90)
        ms = best_ms(lambda f=fmt, b=blob: decode_compressed(f, b))
        print(f"  {fmt:12s} {ms:7.3f} ms ({len(blob) // 1024} KiB)")

    scores = rng.random((H, W), dtype=np.float32)
    labels = (rng.random((H, W)) < 0.1).astype(np.uint8)
    metrics = PixelMetrics()
    print(f"PixelMetrics ({metrics.num_bins} bins, state {metrics.state.nbytes / 2**20:.1f} MiB):")
    print(f"  update one {W}x{H} frame {best_ms(lambda: metrics.update(scores, labels)):7.3f} ms")
    print(f"  compute()                {best_ms(metrics.compute, 5):7.3f} ms")
    print(f"  curves()                 {best_ms(metrics.curves, 5):7.3f} ms")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ds"
        (root / "images").mkdir(parents=True)
        (root / "masks").mkdir()
        n = 60
        for i in range(n):
            cv2.imwrite(str(root / "images" / f"{i:04d}.png"), np.roll(rgb, i, axis=1))
            cv2.imwrite(str(root / "masks" / f"{i:04d}.png"), labels)
        for storage in ["sqlite3", "mcap"]:
            for enc in ["rgb8", "jpeg"]:
                bag = Path(tmp) / f"bag_{storage}_{enc}"
                write_bag_from_folder(root, bag, encoding=enc, storage=storage)
                t0 = time.perf_counter()
                count = sum(1 for _ in iter_bag_frames(bag, "/camera/image_raw", "/camera/anomaly_mask"))
                dt = time.perf_counter() - t0
                print(
                    f"bag read {storage:7s} {enc:5s}: {count / dt:6.0f} frames/s (image + mask, two passes)"
                )


if __name__ == "__main__":
    main()
