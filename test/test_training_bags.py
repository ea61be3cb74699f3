"""Training from rosbag2 recordings (issue 24): bags as data.train / data.val, subsampling, bad input.

Tiny scale: 56x56 frames, random ViT-S/14, 2 flow steps, a few optimiser steps. Bags are
written with rosbags (no ROS install needed) and with flowclas-bag's writer.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
import yaml
from bag_support import (
    FRONT_TOPIC,
    REAR_TOPIC,
    START_NS,
    compressed_msg,
    image_msg,
    moving_frames,
    string_msg,
    two_topic_bag,
    write_bag,
)
from safetensors.torch import load_file
from train_support import tiny_train_dict

from flowclas_ros.config_io import ConfigError, from_dict
from flowclas_ros.data.bags.source import IMAGE_TYPE
from flowclas_ros.data.bags.writer import write_bag_from_folder
from flowclas_ros.data.images.folder import FolderDataset
from flowclas_ros.evaluation.metrics import PixelMetrics
from flowclas_ros.model import load_checkpoint
from flowclas_ros.runtime.torch_backend import TorchBackend
from flowclas_ros.synthetic.synthetic_scenes import SceneConfig, generate_dataset
from flowclas_ros.training.bag_frames import FrameStore, rate_gate, read_bag_frames
from flowclas_ros.training.cli import main as train_main
from flowclas_ros.training.config import BagConfig, TrainConfig
from flowclas_ros.training.loop import Trainer

torch.set_num_threads(1)
FRONT, REAR = FRONT_TOPIC, REAR_TOPIC
EVERY = {"max_rate_hz": 0.0, "skip_static": False}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    counts = {"train": 6, "val": 3, "test": 3}
    generate_dataset(root, seed=3, counts=counts, cfg=SceneConfig(size=(56, 56)), progress=False)
    return root


def config(root, train, **top) -> TrainConfig:
    data = {**tiny_train_dict(root), "steps": 4, "val_every": 2, "checkpoint_every": 2, "seed": 5, **top}
    data["data"] = {**data["data"], "train": train, "bag": EVERY}
    return from_dict(TrainConfig, data)


def test_as_a_bag_and_as_a_folder_the_same_frames_train_the_same_model(tiny, tmp_path):
    bag = write_bag_from_folder(tiny / "train", tmp_path / "train_bag", mask_topic=None).path  # sqlite3, rgb8
    runs = {}
    for name, train in (("folder", "train"), ("bag", str(bag))):
        Trainer(config(tiny, train), tmp_path / name, progress=False).run()
        runs[name] = load_checkpoint(tmp_path / name / "checkpoint")
    test = FolderDataset(tiny / "test", require_masks=True)
    images = [test.load_image(i) for i in range(len(test))]
    aps = {}
    for name, ckpt in runs.items():
        metrics = PixelMetrics(score_range=None)
        for i, pred in enumerate(TorchBackend(ckpt).predict(images)):
            metrics.update(pred.score_map, test.load_mask(i))
        aps[name] = metrics.compute()["ap"]
    assert abs(aps["bag"] - aps["folder"]) <= 0.01, aps
    # The frames are the same pixels in the same order, so training is bit-for-bit the same.
    flows = {n: load_file(str(tmp_path / n / "checkpoint" / "flow.safetensors")) for n in runs}
    assert all(torch.equal(flows["bag"][k], flows["folder"][k]) for k in flows["folder"])
    source = runs["bag"].provenance["training_data"]["sources"][0]
    assert (source["kind"], source["topic"], source["messages"], source["kept"]) == (
        "bag",
        "/camera/image_raw",
        6,
        6,
    )


def test_an_mcap_bag_of_jpeg_frames_trains_with_the_last_part_of_its_time_held_out(tiny, tmp_path, capsys):
    bag = write_bag_from_folder(
        tiny / "train", tmp_path / "b", mask_topic=None, storage="mcap", encoding="jpeg"
    )
    cfg = tiny_train_dict(tiny)
    cfg["data"] = {"train": str(bag.path), "val": "", "val_fraction": 0.34, "bag": EVERY}
    cfg.update(steps=2, val_every=2)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    rc = train_main(["--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run"), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    prov = load_checkpoint(tmp_path / "run" / "checkpoint").provenance
    (source,) = prov["training_data"]["sources"]
    assert source["msgtype"] == "sensor_msgs/msg/CompressedImage" and source["path"].endswith("/b")
    # 6 frames at 10 Hz span 0.5 s: the last 34 % (from 0.33 s) are frames 4 and 5
    assert (source["train"], source["val"], prov["training_data"]["n_val"]) == (4, 2, 2)
    assert prov["val_metrics"]["mode"] == "oe"  # recordings have no masks: OE pastes as today


def test_two_image_topics_need_a_choice_and_a_static_stretch_is_thinned(tmp_path):
    front = two_topic_bag(tmp_path / "bag")
    with pytest.raises(ConfigError, match=rf"bag .*bag has 2 image topics \({FRONT}, {REAR}\).*image_topic"):
        read_bag_frames(tmp_path / "bag", BagConfig(), "data.train")
    every = read_bag_frames(tmp_path / "bag", BagConfig(FRONT, 0.0, False), "data.train")
    assert len(every) == 40 and all(np.array_equal(every.load_image(i), front[i]) for i in range(40))
    # 2 Hz keeps frames 0, 5, ..., 35; of those, 15, 20 and 25 repeat frame 10 (the robot stands still)
    thin = read_bag_frames(tmp_path / "bag", BagConfig(FRONT), "data.train")
    rep = thin.report
    assert (rep.messages, rep.rate_skipped, rep.static_skipped, rep.kept) == (40, 32, 3, 5)
    assert [(s - START_NS) // 10**8 for s in thin.stamps_ns] == [0, 5, 10, 30, 35]
    assert np.array_equal(thin.load_image(2), front[10])
    moving_only = read_bag_frames(tmp_path / "bag", BagConfig(REAR, 2.0, True), "data.train")
    assert moving_only.report.kept == 8 and moving_only.report.static_skipped == 0
    train, val = thin.split_by_time(0.2, "data.train")  # last 20 % of the kept 3.5 s: from 2.8 s
    assert [(s - START_NS) // 10**8 for s in val.stamps_ns] == [30, 35] and len(train) == 3
    with pytest.raises(ConfigError, match="keeps 1 frame.*too few to hold out data.val_fraction=0.2"):
        thin.subset([0]).split_by_time(0.2, "data.train")


def test_rate_gate_keeps_at_most_max_rate_by_stamp_and_drops_unparsable_stamps():
    from flowclas_ros.data.bags.reader import NO_STAMP

    stamps = [0, 30, 70, 100, 140, NO_STAMP, 200, 230]  # ms-like units below, scaled to ns
    ns = [s * 10**6 if s != NO_STAMP else s for s in stamps]
    assert rate_gate(ns, 10.0) == [0, 3, 6]  # >= 100 ms apart
    assert rate_gate(ns, 0.0) == [0, 1, 2, 3, 4, 6, 7]
    assert rate_gate(list(reversed(ns)), 10.0) == [7, 4, 1]  # by stamp, not by file position


def test_frame_store_round_trips_frames_of_any_size_and_survives_pickling(tmp_path):
    import pickle

    store = FrameStore()
    frames = [np.full((5, 7, 3), 9, np.uint8), np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)]
    assert [store.append(f) for f in frames] == [0, 1]
    store.finish()
    clone = pickle.loads(pickle.dumps(store))
    assert all(np.array_equal(s.get(i), f) for s in (store, clone) for i, f in enumerate(frames))
    path = store.path
    del store, clone
    assert not path.exists()  # the scratch file goes with its store


# ---------------------------------------------------------------------- bad input


def bad_bags(tmp_path):
    rgb = moving_frames(6)
    stamps = [START_NS + i * 10**8 for i in range(6)]
    bags = {}
    bags["missing_topic"] = (
        write_bag(tmp_path / "m", [(FRONT, s, image_msg(s, f)) for s, f in zip(stamps, rgb)]),
        "/nope",
    )
    bags["wrong_type"] = (write_bag(tmp_path / "w", [("/chatter", stamps[0], string_msg("hi"))]), "/chatter")
    bags["empty"] = (write_bag(tmp_path / "e", [], empty_topics=[(FRONT, IMAGE_TYPE)]), FRONT)
    junk = [(FRONT, s, compressed_msg(s, None, data=b"not a jpeg")) for s in stamps]
    bags["undecodable"] = (write_bag(tmp_path / "u", junk), FRONT)
    bags["no_images"] = (write_bag(tmp_path / "n", [("/chatter", stamps[0], string_msg("hi"))]), "")
    return bags


EXPECTED = {
    "missing_topic": "has no topic /nope (data.bag.image_topic); topics: /front/image_raw",
    "wrong_type": "topic /chatter has type std_msgs/msg/String; data.bag.image_topic must be",
    "empty": "topic /front/image_raw: no messages",
    "undecodable": "topic /front/image_raw: none of its 6 frames could be decoded; nothing to train on",
    "no_images": "has no sensor_msgs/msg/Image or sensor_msgs/msg/CompressedImage topic; topics: /chatter",
}


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_bad_recordings_are_one_line_errors_naming_bag_and_topic_and_training_never_starts(
    case, tiny, tmp_path, capsys
):
    bag, topic = bad_bags(tmp_path)[case]
    cfg = tiny_train_dict(tiny)
    cfg["data"] = {"train": str(bag), "val": "", "bag": {"image_topic": topic}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    rc = train_main(["--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    line = err.strip().splitlines()[-1]
    assert rc == 2 and "Traceback" not in err
    assert line.startswith(f"flowclas-train: error: data.train: bag {bag}") and EXPECTED[case] in line, line
    assert not (tmp_path / "run").exists()  # nothing written: training never started


def test_undecodable_frames_are_skipped_with_a_count(tmp_path, caplog):
    rgb = moving_frames(6)
    stamps = [START_NS + i * 10**8 for i in range(6)]
    entries = [
        (FRONT, s, compressed_msg(s, None, data=b"junk") if i in (1, 4) else compressed_msg(s, f))
        for i, (s, f) in enumerate(zip(stamps, rgb))
    ]
    write_bag(tmp_path / "bag", entries)
    with caplog.at_level(logging.WARNING):
        frames = read_bag_frames(tmp_path / "bag", BagConfig(**EVERY), "data.train")
    assert len(frames) == 4 and frames.report.undecodable == 2
    assert (
        f"data.train: bag {tmp_path / 'bag'} topic {FRONT}: skipped 2 undecodable frames of 6" in caplog.text
    )


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_a_cut_off_recording_trains_on_its_readable_frames_with_a_warning(tmp_path, storage, caplog):
    two_topic_bag(tmp_path / "bag", storage)
    storage_file = next(p for p in (tmp_path / "bag").iterdir() if p.suffix in (".db3", ".mcap"))
    data = storage_file.read_bytes()
    storage_file.write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING):
        frames = read_bag_frames(tmp_path / "bag", BagConfig(FRONT, 0.0, False), "data.train")
    assert 3 <= len(frames) < 40 and frames.report.problems
    assert f"data.train: bag {tmp_path / 'bag'} topic {FRONT}: damaged (" in caplog.text
    assert f"training on the {len(frames)} readable frames" in caplog.text


def test_a_list_mixes_bags_and_folders_and_provenance_counts_each(tiny, tmp_path):
    two_topic_bag(tmp_path / "bag")
    data = tiny_train_dict(tiny)
    data["data"] = {
        "root": str(tiny),
        "train": ["train", str(tmp_path / "bag")],
        "val": "",
        "val_fraction": 0.25,  # folder: every 4th image; bag: from 2.625 s of its kept 3.5 s
        "bag": {"image_topic": FRONT},
    }
    cfg = from_dict(TrainConfig, {**data, "steps": 1})
    summary = Trainer(cfg, tmp_path / "run", progress=False).run()
    prov = json.loads((summary.checkpoint / "config.json").read_text())["provenance"]["training_data"]
    folder, bag = prov["sources"]
    assert (folder["kind"], folder["images"], folder["train"], folder["val"]) == ("folder", 6, 5, 1)
    assert (bag["kind"], bag["topic"], bag["kept"], bag["train"], bag["val"]) == ("bag", FRONT, 5, 3, 2)
    assert prov["n_train"] == 8 and prov["n_val"] == 3 and len(prov["train"]) == 2


def test_the_old_string_form_and_bag_keys_are_typed(tiny):
    assert config(tiny, "train").data.train == "train"
    with pytest.raises(ConfigError, match="unknown config key.*data.bag.topic"):
        from_dict(TrainConfig, {"data": {"bag": {"topic": "/x"}}})
    with pytest.raises(ConfigError, match="max_rate_hz and static_threshold must be >= 0"):
        from_dict(TrainConfig, {"data": {"bag": {"max_rate_hz": -1}}})
    assert from_dict(TrainConfig, {}).data.bag == BagConfig("", 2.0, True, 2.0)


def test_a_bag_as_masked_validation_and_a_missing_path_are_one_line_errors(tiny, tmp_path):
    from flowclas_ros.training.datasets import prepare_data
    from flowclas_ros.training.distributed import DistContext

    two_topic_bag(tmp_path / "bag")
    ctx = DistContext()
    cfg = config(tiny, "train").data
    cfg.val, cfg.val_anomalies = str(tmp_path / "bag"), "masks"
    with pytest.raises(ConfigError, match=r"data.val: bag .*bag carries no masks for validation"):
        prepare_data(cfg, ctx, progress=False)
    cfg.val, cfg.train = "", ["train", str(tmp_path / "nothing.mcap")]
    with pytest.raises(ConfigError, match=r"data.train\[1\]: bag .*nothing.mcap does not exist"):
        prepare_data(cfg, ctx, progress=False)
    cfg.train = ["train", str(tmp_path / "nothing")]
    with pytest.raises(ConfigError, match=r"data.train\[1\]: folder .*nothing' not found; .*or a rosbag2"):
        prepare_data(cfg, ctx, progress=False)


def test_the_site_recipe_loads_strictly_and_fine_tunes_in_fewer_steps_than_the_demo():
    from pathlib import Path

    from flowclas_ros.config_io import load

    configs = Path(__file__).resolve().parents[1] / "config" / "train"
    site, demo = load(TrainConfig, configs / "site.yaml"), load(TrainConfig, configs / "demo.yaml")
    # Fine-tunes the demo's checkpoints in fewer steps (docs/SITE.md: 150 measured at 224x224).
    assert site.steps == 150 < demo.steps and site.model == demo.model
    assert site.data.bag == BagConfig("", 2.0, True, 2.0) and site.data.val == "" and site.data.train == ""
