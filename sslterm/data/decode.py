"""Batched decoding of image files on the training device: the large-image path's front.

DataLoader workers only read each file's bytes (:class:`EncodedFiles`), so a few workers
feed a GPU that per-sample PIL pipelines would need a hundred cores for. The main process
decodes a whole batch at once with ``torchvision.io.decode_jpeg`` on the run's device
(nvJPEG on a GPU, libjpeg-turbo on a CPU run: the same code, so its laws are tested on a
CPU), pads the images into one uint8 batch and hands it with their sizes to
:class:`~sslterm.data.augment.BatchAugment`, whose crops stay inside each image: random
resized crop, resize, flip and colour ops in batch, as on the small-image path.

Files the device decoder does not take -- PNG and other formats, grayscale, CMYK/YCCK,
12-bit or arithmetic-coded JPEGs -- are decoded on the CPU (``decode_image``, RGB) and
moved; the header check that routes them runs in the workers. torchvision's decoder is
used rather than NVIDIA DALI: it ships with torchvision (no extra, no separate CUDA build)
and takes the same inputs on a CPU for testing; DALI stays an option if a GPU measurement
shows decoding to be the bottleneck.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from sslterm.errors import UserError


@contextlib.contextmanager
def _codecs() -> Iterator[None]:
    """torchvision 0.29 deprecates its image codecs for TorchCodec's (a warning at import and
    at every call); they are in the torchvision the project pins (<0.30), where decode_jpeg
    is the batched nvJPEG decoder."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The image decoding", DeprecationWarning)
        yield


with _codecs():
    from torchvision.io import ImageReadMode, decode_image, decode_jpeg

# Start-of-frame markers: Huffman baseline, extended and progressive JPEGs are what the
# device decoder takes; the others (lossless, arithmetic-coded) go to the CPU.
_SOF_DEVICE = frozenset((0xC0, 0xC1, 0xC2))
_SOF_ALL = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # less DHT, JPG, DAC


def device_decodable(data: bytes | memoryview) -> bool:
    """Whether ``data`` is a JPEG the batched device decoder takes: 8-bit, 3 components
    (YCbCr), Huffman-coded baseline or progressive. Reads the markers up to the frame
    header only (after EXIF/ICC segments), not the image."""
    if bytes(data[:2]) != b"\xff\xd8":
        return False
    pos, end = 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return False
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        if marker in _SOF_ALL:
            if pos + 10 > end:
                return False
            precision, components = data[pos + 4], data[pos + 9]
            return marker in _SOF_DEVICE and precision == 8 and components == 3
        pos += 2 + ((data[pos + 2] << 8) | data[pos + 3])
    return False


@dataclass
class EncodedBatch:
    """A batch of undecoded files: what the workers hand the main process."""

    data: list[torch.Tensor]  # each file's bytes, uint8 [length]
    on_device: list[bool]  # JPEGs the device decoder takes (device_decodable)
    labels: torch.Tensor  # int64 [B]
    paths: list[str]  # for error messages

    def pin_memory(self) -> EncodedBatch:
        """The DataLoader's pin_memory hook: only the labels travel by copy (the decoder
        reads the bytes on the host)."""
        return EncodedBatch(self.data, self.on_device, self.labels.pin_memory(), self.paths)


class EncodedFiles(Dataset):
    """``(path, label)`` samples as ``(bytes, device-decodable, label, path)``: a worker reads
    the file and checks its header, nothing more."""

    def __init__(self, samples: Sequence[tuple[str, int]]) -> None:
        self.samples = list(samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, bool, int, str]:
        path, label = self.samples[index]
        with open(path, "rb") as f:
            raw = bytearray(f.read())
        data = torch.frombuffer(raw, dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
        return data, device_decodable(raw), label, path


def collate_encoded(items: list[tuple[torch.Tensor, bool, int, str]]) -> EncodedBatch:
    """Keep the byte tensors as a list: they differ in length, and the decoder takes lists."""
    data, on_device, labels, paths = zip(*items, strict=True)
    return EncodedBatch(list(data), list(on_device), torch.tensor(labels), list(paths))


def _decode_cpu(data: torch.Tensor, path: str) -> torch.Tensor:
    try:
        with _codecs():
            return decode_image(data, mode=ImageReadMode.RGB)
    except RuntimeError as exc:
        raise UserError(f"cannot decode image {path} ({exc})") from exc


def decode_images(batch: EncodedBatch, device: torch.device) -> list[torch.Tensor]:
    """Every file of ``batch`` as uint8 RGB [3, H, W] on ``device``, in order: the device
    decoder's JPEGs in one batched call, the rest on the CPU. A JPEG the batched call
    refuses (a header that looked fine, a corrupt scan) is retried alone on the CPU; one
    that fails there too is a UserError naming the file."""
    images: list[torch.Tensor | None] = [None] * len(batch.data)
    jpegs = [i for i, ok in enumerate(batch.on_device) if ok]
    if jpegs:
        try:
            with _codecs():
                decoded = decode_jpeg([batch.data[i] for i in jpegs], mode=ImageReadMode.RGB,
                                      device=device)
            for i, image in zip(jpegs, decoded, strict=True):
                images[i] = image
        except RuntimeError:
            pass  # all of them to the CPU below, where the culprit is named
    pinned = device.type == "cuda"
    for i, image in enumerate(images):
        if image is None:
            cpu = _decode_cpu(batch.data[i], batch.paths[i])
            images[i] = (cpu.pin_memory() if pinned else cpu).to(device, non_blocking=True)
    return images  # type: ignore[return-value]


def shrink(image: torch.Tensor, max_side: int) -> torch.Tensor:
    """An image whose longer side exceeds ``max_side``, reduced by the smallest integer
    factor that brings it within (area average, partial edge cells averaged over what they
    cover); others as they are. One huge photograph would otherwise size the whole padded
    batch and the augmentation's work."""
    side = max(image.shape[-2:])
    if side <= max_side:
        return image
    k = math.ceil(side / max_side)
    pooled = F.avg_pool2d(image.unsqueeze(0).float(), k, ceil_mode=True)
    return pooled.round_().squeeze(0).to(torch.uint8)


def pad_batch(images: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images of different sizes as one zero-padded batch [B, 3, H_max, W_max], each in
    its top-left corner, and their sizes [B, 2] (height, width) on the host (pinned on a
    GPU run, for an asynchronous copy)."""
    height = max(int(im.shape[-2]) for im in images)
    width = max(int(im.shape[-1]) for im in images)
    device = images[0].device
    batch = torch.zeros((len(images), 3, height, width), dtype=torch.uint8, device=device)
    for i, image in enumerate(images):
        batch[i, :, : image.shape[-2], : image.shape[-1]] = image
    sizes = torch.tensor([tuple(im.shape[-2:]) for im in images], dtype=torch.long)
    return batch, sizes.pin_memory() if device.type == "cuda" else sizes
