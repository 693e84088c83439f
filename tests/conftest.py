import numpy as np
import pytest
import torch

from stitchlib import data, models, train

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits16():
    """The embedded default data at 16×16: (train, test) TensorDatasets."""
    return data.load("digits", "train", image_size=16), data.load("digits", "test", image_size=16)


@pytest.fixture(scope="session")
def trained_resnet(digits16):
    """A small ResNet-18 (width 8) trained for 3 epochs on the digits: real, structured activations."""
    torch.manual_seed(0)
    net = models.build("resnet18", num_classes=10, image_size=16, width=8)
    metrics = train.train_network(net, *digits16, dict(optimizer="adam", lr=1e-3, weight_decay=1e-5, epochs=3,
                                                      batch_size=64), seed=0, device=torch.device("cpu"),
                                  progress=lambda s: None)
    assert metrics["test_accuracy"] > 0.8
    return net.eval()


@pytest.fixture
def rng():
    return np.random.default_rng(0)
