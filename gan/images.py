"""The images every part of the lab agrees on: MNIST padded to 32x32, flattened to 1024 values."""

IMAGE_SIZE = 32
IMAGE_DIM = IMAGE_SIZE * IMAGE_SIZE  # 1024: what G outputs and D reads
