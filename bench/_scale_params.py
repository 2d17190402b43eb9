"""The scale benchmark's sizes and thresholds (bench.scale runs it, bench._scale_report writes it up)."""


CLASSES = 10_000
TRAIN_PER_CLASS = 2
VAL_PER_CLASS = (1, 3)
IMAGE_SIZE = 32
EMBED_DIM = 768  # ViT-L/14's output width
PHOTOS = 2000
REQUESTS = 20
EPOCHS, SAMPLES_PER_EPOCH = 2, 10_000
PROBE_EPOCHS = 2
REPLICAS = 12  # the long run: the training split listed this many times over (new ids, the same files)
INAT_VAL, INAT_TRAIN = 100_000, 2_686_843
GOAL_GB = 16.0
SAMPLE_S = 0.1
MB = 1e6
GROWTH_MB = 64.0
"""A rise of a peak smaller than this is within run-to-run noise (seen: +-50 MB for the same work; ~3 KB/image over 20,000)."""
STAGES = ("toy-inat", "shards train", "shards val", "embed train", "embed val", "train", "eval", "calibrate", "probe",
          "export --onnx", "predict RUN", "predict EXPORT", "serve")
"""Every stage, in the order a run measures them."""
LONG = ("shards train", "embed train")
"""Stages run once more, after both runs, on the training split x REPLICAS: their projection goes 134x past the data."""
