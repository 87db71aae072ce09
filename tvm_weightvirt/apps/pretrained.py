"""Publicly released pretrained models and real photos, fetched from the Python package index
(the wheels that ship them, `pip download --no-deps`, kept under the model cache): what a user
packs who downloads models rather than training them.

- MTCNN's three face-detector stages (Zhang et al. 2016) as facenet-pytorch ships them: P-Net
  (12x12 crops: face score map + box map), R-Net (24x24: score + box) and O-Net (48x48:
  score + box + 5 landmarks); their graphs here, their weights read from the wheel's state
  dicts (`torch.load(weights_only=True)`: tensors only, no code).
- PaddleOCR's text direction classifier (2 classes on a 48x192 line) and text recogniser
  (6,625 characters at each of 40 positions of a 48x320 line) as rapidocr-onnxruntime ships
  them, ONNX files.
- Photos: scikit-image's sample images (astronaut, coffee, chelsea, rocket, motorcycles, text
  and page scans, ...) and scikit-learn's two, cropped at random scales and places.

Needs the network the first time (a package index); afterwards the cache serves.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile

import numpy as np

from ..cache import cache_dir

WHEELS = {  # package: (version, wheel file name prefix)
    "facenet-pytorch": ("2.6.0", "facenet_pytorch-2.6.0"),
    "rapidocr-onnxruntime": ("1.4.4", "rapidocr_onnxruntime-1.4.4"),
    "scikit-image": ("0.25.2", "scikit_image-0.25.2"),
}
PHOTOS = [
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "hubble_deep_field.jpg",
    "camera.png",
    "text.png",
    "page.png",
    "coins.png",
    "horse.png",
]
MTCNN_SIZES = {"pnet": 12, "rnet": 24, "onet": 48}
OCR_MODELS = {  # name: (file in the wheel, input height, width)
    "ocr_cls": ("ch_ppocr_mobile_v2.0_cls_infer.onnx", 48, 192),
    "ocr_rec": ("ch_PP-OCRv4_rec_infer.onnx", 48, 320),
}


def wheel(package: str) -> zipfile.ZipFile:
    """The pinned wheel of `package`, downloaded once into the cache."""
    version, prefix = WHEELS[package]
    folder = os.path.join(cache_dir(), "pretrained")
    os.makedirs(folder, exist_ok=True)
    found = [f for f in os.listdir(folder) if f.startswith(prefix) and f.endswith(".whl")]
    if not found:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        command += [f"{package}=={version}", "-d", folder, "--quiet"]
        done = subprocess.run(command, capture_output=True, text=True)
        found = [f for f in os.listdir(folder) if f.startswith(prefix) and f.endswith(".whl")]
        if done.returncode != 0 or not found:
            raise RuntimeError(
                f"cannot download {package}=={version} from the package index: "
                f"{done.stderr.strip().splitlines()[-1] if done.stderr.strip() else 'no wheel'}"
            )
    return zipfile.ZipFile(os.path.join(folder, sorted(found)[0]))


# **** MTCNN (facenet-pytorch's weights) ****


def mtcnn_stage(name: str):
    """MTCNN stage `name` ("pnet", "rnet", "onet") as a torch module in eval mode with the
    released weights. Outputs as facenet-pytorch's: P-Net and R-Net (box, score), O-Net (box,
    landmarks, score); score is a softmax over (no face, face)."""
    import torch

    with wheel("facenet-pytorch") as whl:
        state = torch.load(
            io.BytesIO(whl.read(f"facenet_pytorch/data/{name}.pt")), weights_only=True
        )
    model = _MTCNN_BUILDERS[name]()
    model.load_state_dict(state)
    return model.eval()


def _pnet():
    from torch import nn

    class PNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
            self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
            self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
            self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
            self.conv4_1, self.conv4_2 = nn.Conv2d(32, 2, 1), nn.Conv2d(32, 4, 1)

        def forward(self, x):
            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
            return self.conv4_2(x), self.conv4_1(x).softmax(1)

    return PNet()


def _rnet():
    from torch import nn

    class RNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
            self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
            self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
            self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
            self.dense5_1, self.dense5_2 = nn.Linear(128, 2), nn.Linear(128, 4)

        def forward(self, x):
            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.pool2(self.prelu2(self.conv2(x)))
            x = self.prelu3(self.conv3(x)).permute(0, 3, 2, 1).reshape(x.shape[0], -1)
            x = self.prelu4(self.dense4(x))
            return self.dense5_2(x), self.dense5_1(x).softmax(1)

    return RNet()


def _onet():
    from torch import nn

    class ONet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
            self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
            self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
            self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
            self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
            self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
            self.dense6_1 = nn.Linear(256, 2)
            self.dense6_2, self.dense6_3 = nn.Linear(256, 4), nn.Linear(256, 10)

        def forward(self, x):
            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.pool2(self.prelu2(self.conv2(x)))
            x = self.pool3(self.prelu3(self.conv3(x)))
            x = self.prelu4(self.conv4(x)).permute(0, 3, 2, 1).reshape(x.shape[0], -1)
            x = self.prelu5(self.dense5(x))
            return self.dense6_2(x), self.dense6_3(x), self.dense6_1(x).softmax(1)

    return ONet()


_MTCNN_BUILDERS = {"pnet": _pnet, "rnet": _rnet, "onet": _onet}
MTCNN_OUTPUTS = {"pnet": ["box", "score"], "rnet": ["box", "score"]}
MTCNN_OUTPUTS["onet"] = ["box", "landmarks", "score"]


def mtcnn_task(name: str):
    """MTCNN stage `name` as a Task, its outputs named (box, score; O-Net also landmarks)."""
    import torch

    from ..frontend.task import Task

    size = MTCNN_SIZES[name]
    task = Task.from_torch(mtcnn_stage(name), (torch.zeros(1, 3, size, size),), name)
    task.output_names = tuple(MTCNN_OUTPUTS[name])
    return task


def mtcnn_inputs(name: str, n: int, seed: int = 0) -> np.ndarray:
    """`n` photo crops at stage `name`'s input size, normalised as MTCNN does
    ((pixel - 127.5) / 128)."""
    size = MTCNN_SIZES[name]
    return (crops(n, size, size, seed) - 127.5) * 0.0078125


# **** PaddleOCR (rapidocr-onnxruntime's files) ****


def ocr_task(name: str):
    """PaddleOCR model `name` ("ocr_cls", "ocr_rec") as a Task at its input size."""
    import onnx

    from ..frontend.task import Task

    file, height, width = OCR_MODELS[name]
    with wheel("rapidocr-onnxruntime") as whl:
        model = onnx.load_from_string(whl.read(f"rapidocr_onnxruntime/models/{file}"))
    shape = {model.graph.input[0].name: [1, 3, height, width]}
    return Task.from_onnx(model, name=name, shape_dict=shape)


def ocr_inputs(name: str, n: int, seed: int = 0) -> np.ndarray:
    """`n` photo crops as text lines at model `name`'s input size, normalised as PaddleOCR
    does ((pixel / 255 - 0.5) / 0.5)."""
    _, height, width = OCR_MODELS[name]
    return (crops(n, height, width, seed) / 255.0 - 0.5) / 0.5


# **** photos ****


def photos() -> list[np.ndarray]:
    """The sample photos as RGB uint8 arrays [H, W, 3]."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    images = list(load_sample_images().images)
    with wheel("scikit-image") as whl:
        for name in PHOTOS:
            image = Image.open(io.BytesIO(whl.read(f"skimage/data/{name}"))).convert("RGB")
            images.append(np.asarray(image))
    return images


def crops(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """`n` crops of the photos (seeded: photo, scale from 1 to 16 times the output size,
    place), resized to height x width: float32 [n, 3, height, width] of 0..255."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = photos()
    out = np.empty((n, 3, height, width), np.float32)
    for i in range(n):
        image = images[rng.integers(len(images))]
        h, w = image.shape[:2]
        scale = min(np.exp(rng.uniform(0, np.log(16))), h / height, w / width)
        ch, cw = max(1, int(height * scale)), max(1, int(width * scale))
        top, left = rng.integers(h - ch + 1), rng.integers(w - cw + 1)
        crop = Image.fromarray(image[top : top + ch, left : left + cw])
        resized = crop.resize((width, height), Image.Resampling.BILINEAR)
        out[i] = np.asarray(resized, np.float32).transpose(2, 0, 1)
    return out
