"""Training throughput of every method: the measurements behind `benchmark.py training`.

Each measurement runs in a fresh process (`python scripts/training_benchmark.py SPEC_JSON`, one
JSON line out), so that the peak RSS is the method's own.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from pytorch_lightning import Callback, Trainer

import ssl_lightning.methods
from ssl_lightning.cli.lightning import read_model_config
from ssl_lightning.data import FashionMNISTDataModule, ImageDataModule
from ssl_lightning.encoder import EncoderConfig
from ssl_lightning.methods import EncoderMethod, MomentumPretrainMethod, PretrainMethod, Supervised
from ssl_lightning.optim import build_optimizer

CONFIGS = Path(ssl_lightning.__file__).parent / "configs"
METHODS = ("simclr", "moco", "byol", "barlow_twins", "vicreg", "simsiam", "moco_v3", "nnclr", "swav", "dino", "autoencoder",
           "supervised")  # config names


@dataclass
class Spec:
    method: str
    device: str = "cpu"
    batch_size: int = 256
    image_size: int = 28  # 28 with 1 channel: Fashion-MNIST; anything else: synthetic images
    channels: int = 1
    width: int = 16
    small_images: bool = True
    precision: str = "32-true"  # "bf16-mixed" on GPU
    channels_last: bool = True
    compile: bool = False
    warmup: int = 3
    steps: int = 10
    peer: bool = False  # SimCLR fed by lightly's pipeline instead of ours
    workers: int = 2  # the peer's DataLoader workers


class SyntheticImages(ImageDataModule):
    """Random uint8 images of any size and channel count, 10 classes (shapes only matter here)."""

    num_classes = 10

    def __init__(self, image_size: int, channels: int, num_images: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.image_size, self.num_channels, self.num_images = image_size, channels, num_images
        self.mean, self.std = (0.5,) * channels, (0.25,) * channels

    def load_split(self, train: bool):
        g = torch.Generator().manual_seed(int(train))
        images = torch.randint(0, 256, (self.num_images, self.num_channels, self.image_size, self.image_size), dtype=torch.uint8, generator=g)
        return images, torch.randint(0, 10, (self.num_images,), generator=g)


def make_data(spec: Spec) -> ImageDataModule:
    if (spec.image_size, spec.channels) == (28, 1):
        return FashionMNISTDataModule(batch_size=spec.batch_size, val_size=1000)
    return SyntheticImages(spec.image_size, spec.channels, images_needed(spec), batch_size=spec.batch_size, val_size=1000)


def images_needed(spec: Spec) -> int:
    return (spec.warmup + spec.steps + 2) * spec.batch_size + 1000  # every timed step in the first epoch


def make_method(spec: Spec, data: ImageDataModule) -> EncoderMethod:
    """The method as its config defines it (heads, views, optimizer), on the benchmark's backbone."""
    class_path, init_args = read_model_config(CONFIGS / f"{spec.method}.yaml")
    cls = getattr(ssl_lightning.methods, class_path.rsplit(".", 1)[-1])
    encoder = EncoderConfig(backbone="resnet18", width=spec.width, small_images=spec.small_images, in_channels=data.num_channels,
                            input_size=data.image_size, mean=data.mean, std=data.std, channels_last=spec.channels_last,
                            compile=spec.compile)
    args = {**init_args, "encoder": encoder}
    if cls is Supervised:
        args["num_classes"] = data.num_classes
    return cls(**args)


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


class StepTimer(Callback):
    """Time from the end of step `warmup` to the end of step `warmup + steps`: exactly `steps`
    whole iterations (fetch, transfer, views, forward, backward, optimizer step)."""

    def __init__(self, warmup: int, device: str) -> None:
        self.warmup, self.device = warmup, device
        self.start = self.end = 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step in (self.warmup, trainer.max_steps):
            synchronize(self.device)
            if trainer.global_step == self.warmup:
                self.start = time.perf_counter()
            else:
                self.end = time.perf_counter()


def pipeline(spec: Spec) -> float:
    data = make_data(spec)
    timer = StepTimer(spec.warmup, spec.device)
    trainer = Trainer(accelerator=spec.device, devices=1, precision=spec.precision, max_steps=spec.warmup + spec.steps,
                      limit_val_batches=0, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=[timer])
    trainer.fit(make_method(spec, data), datamodule=data)
    return spec.steps * spec.batch_size / (timer.end - timer.start)


def fit(spec: Spec) -> float:
    """The pipeline as `ssl-lightning fit` runs the method's config: with its TensorBoard logging,
    progress bar, online evaluation and checkpoint callbacks (the timed steps hold no validation)."""
    from ssl_lightning.cli import make_cli

    with tempfile.TemporaryDirectory() as runs:
        args = ["fit", "--config", str(CONFIGS / f"{spec.method}.yaml"), "--model.init_args.encoder.backbone=resnet18",
                f"--model.init_args.encoder.width={spec.width}", f"--model.init_args.encoder.small_images={spec.small_images}",
                f"--model.init_args.encoder.channels_last={spec.channels_last}", f"--model.init_args.encoder.compile={spec.compile}",
                f"--trainer.accelerator={spec.device}", f"--trainer.precision={spec.precision}",
                f"--trainer.max_steps={spec.warmup + spec.steps}", f"--trainer.default_root_dir={runs}",
                f"--trainer.logger.init_args.save_dir={runs}", "--trainer.callbacks+=training_benchmark.StepTimer",
                f"--trainer.callbacks.warmup={spec.warmup}", f"--trainer.callbacks.device={spec.device}",
                f"--data.init_args.batch_size={spec.batch_size}", "--data.init_args.val_size=1000"]
        if (spec.image_size, spec.channels) != (28, 1):
            args += ["--data.class_path=training_benchmark.SyntheticImages", f"--data.init_args.image_size={spec.image_size}",
                     f"--data.init_args.channels={spec.channels}", f"--data.init_args.num_images={images_needed(spec)}"]
        trainer = make_cli(args).trainer
    # As a script this module is __main__: the CLI's StepTimer is training_benchmark's, another class.
    timer = next(c for c in trainer.callbacks if type(c).__name__ == "StepTimer")
    return spec.steps * spec.batch_size / (timer.end - timer.start)


def model_only(spec: Spec) -> float:
    data = make_data(spec)
    data.setup("fit")
    model = make_method(spec, data).to(spec.device).train()
    model.configure_model()  # compiles, where asked, as Lightning does in the pipeline
    optimizer = build_optimizer(model, model.optimizer_config)
    images, labels = next(iter(data.train_dataloader()))
    x, labels = images.to(spec.device).float() / 255, labels.to(spec.device)
    with torch.no_grad():  # the views, made once, in advance
        views = model.views(x)  # the method's views (the supervised baseline's one)

    def step() -> None:
        with torch.autocast(spec.device, dtype=torch.bfloat16, enabled=spec.precision == "bf16-mixed"):
            if isinstance(model, PretrainMethod):
                loss = model.compute_loss(*views).loss
            else:
                loss = F.cross_entropy(model.classifier(model(views[0])), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if isinstance(model, MomentumPretrainMethod):
            model.update_targets(model.target_momentum)

    return timed(step, spec)


def peer(spec: Spec) -> float:
    """Our SimCLR model and optimizer, fed by lightly's SimCLRTransform (PIL, per image, in
    DataLoader workers) with its views' parameters set to ours, and trained with its NTXentLoss."""
    from lightly.loss import NTXentLoss
    from lightly.transforms import SimCLRTransform
    from PIL import Image

    data = make_data(spec)
    data.setup("fit")
    model = make_method(spec, data).to(spec.device).train()
    views = model.view_configs[0]  # SimCLR's two views are alike
    optimizer = build_optimizer(model, model.optimizer_config)
    transform = SimCLRTransform(
        input_size=data.image_size, cj_prob=views["jitter_prob"], cj_strength=1.0, cj_bright=views["brightness"],
        cj_contrast=views["contrast"], cj_sat=views["saturation"], cj_hue=views["hue"], min_scale=views["crop_scale"][0],
        random_gray_scale=views["grayscale_prob"], gaussian_blur=views["blur_prob"], hf_prob=views["flip_prob"],
        normalize=None,  # our encoder normalises, in both pipelines
    )
    criterion = NTXentLoss(temperature=model.temperature)
    images = data.train_set.images

    class PILImages(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(images)

        def __getitem__(self, i: int):
            array = images[i].permute(1, 2, 0).squeeze(-1).numpy()  # (H, W) or (H, W, C)
            return transform(Image.fromarray(array))

    loader = torch.utils.data.DataLoader(PILImages(), batch_size=spec.batch_size, shuffle=True, drop_last=True,
                                         num_workers=spec.workers, pin_memory=spec.device == "cuda",
                                         persistent_workers=spec.workers > 0)
    batches = iter(loader)

    def step() -> None:
        x1, x2 = (v.to(spec.device, non_blocking=True) for v in next(batches))
        with torch.autocast(spec.device, dtype=torch.bfloat16, enabled=spec.precision == "bf16-mixed"):
            z1, z2 = model.projector(model.encoder(torch.cat([x1, x2]))).chunk(2)
            loss = criterion(z1, z2)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return timed(step, spec)


def timed(step, spec: Spec) -> float:
    for _ in range(spec.warmup):
        step()
    synchronize(spec.device)
    start = time.perf_counter()
    for _ in range(spec.steps):
        step()
    synchronize(spec.device)
    return spec.steps * spec.batch_size / (time.perf_counter() - start)


def peak_memory_mb(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the largest finished worker
    return (own + workers) / 1024  # Linux reports kilobytes


def measure(spec: Spec) -> dict:
    """One process, one method: pipeline first (its peak memory is the one reported), then as
    `ssl-lightning fit` runs it, then model-only; or the peer alone."""
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    torch.manual_seed(0)
    if spec.peer:
        return {"peer_images_per_s": peer(spec), "peer_peak_mem_mb": peak_memory_mb(spec.device)}
    result = {"pipeline_images_per_s": pipeline(spec), "peak_mem_mb": peak_memory_mb(spec.device), "fit_images_per_s": fit(spec)}
    if spec.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    result["model_only_images_per_s"] = model_only(spec)
    return result


if __name__ == "__main__":
    spec = Spec(**json.loads(sys.argv[1]))
    os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
    print(json.dumps({**asdict(spec), **measure(spec)}))
