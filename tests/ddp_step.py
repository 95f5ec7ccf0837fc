"""One DDP training step of every method on 2 CPU processes (gloo), run by test_distributed.py as
``python tests/ddp_step.py OUT_DIR``. Lightning's launcher starts the second process by running
this script again. Each process saves to OUT_DIR/<method>-<rank>.pt what it trained on and what it
computed; the test replays the concatenated batch in one process and compares.

Then a run whose loss is NaN in process 1 only: each process saves to OUT_DIR/diverged-<rank>.pt
where it stopped and why (a process that went on alone would wait in DDP's next all-reduce)."""

import sys
from pathlib import Path

import torch
from pytorch_lightning import Callback, Trainer, seed_everything
from torch.nn.modules.batchnorm import _BatchNorm

from conftest import TINY_ENCODER, RandomImages, tiny_pretraining_methods
from ssl_lightning.distributed import gather
from ssl_lightning.errors import TrainingDivergedError
from ssl_lightning.evaluation.online import OnlineEvaluation
from ssl_lightning.methods import Supervised, ViewBatch

MAKERS = {**tiny_pretraining_methods(), "supervised": lambda: Supervised(num_classes=4, encoder=TINY_ENCODER)}


def freeze_batch_norm_statistics(module: torch.nn.Module) -> None:
    """BatchNorm on running statistics: each image's output is its own. (Batch statistics would
    need SyncBatchNorm to match one process, and SyncBatchNorm runs only on GPUs.)"""
    for m in module.modules():
        if isinstance(m, _BatchNorm):
            m.eval()


class Record(Callback):
    def __init__(self) -> None:
        self.saved = {}

    def on_train_start(self, trainer, pl_module):
        self.saved["initial_state"] = {k: v.clone() for k, v in pl_module.state_dict().items()}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        freeze_batch_norm_statistics(pl_module)
        # the views, labels and images (or the images and labels) this process trained on
        tensors = [*batch.views, batch.labels, batch.images] if isinstance(batch, ViewBatch) else list(batch)
        self.saved["inputs"] = [t.clone() for t in tensors]
        self.saved["gathered_labels"] = gather(batch.labels if isinstance(batch, ViewBatch) else batch[1])  # int64 under gloo

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):  # after DDP's gradient averaging
        self.saved["grads"] = {n: p.grad.clone() for n, p in pl_module.named_parameters() if p.grad is not None}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.saved["loss"] = outputs["loss"].detach().clone()
        self.saved["online_classifier"] = trainer.callbacks[0].classifier.weight.detach().clone()
        if hasattr(pl_module, "queue"):
            self.saved["queue"] = pl_module.queue.keys.clone()
        if hasattr(pl_module, "center"):  # DINO's, from the global batch's teacher outputs
            self.saved["center"] = pl_module.center.clone()


def main(out: Path) -> None:
    for name, make in MAKERS.items():
        seed_everything(0)
        record = Record()
        trainer = Trainer(strategy="ddp", accelerator="cpu", devices=2, max_steps=1, limit_val_batches=0, logger=False,
                          enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                          callbacks=[OnlineEvaluation(), record])
        trainer.fit(make(), datamodule=RandomImages(batch_size=8, val_size=32))
        torch.save(record.saved, out / f"{name}-{trainer.global_rank}.pt")
    diverge_in_process_1(out)


def diverge_in_process_1(out: Path) -> None:
    model = MAKERS["simclr"]()
    compute = model.compute_loss
    nan_here = lambda: model.global_rank == 1 and model.global_step == 2  # noqa: E731
    model.compute_loss = lambda x1, x2: (lambda o: o._replace(loss=o.loss * float("nan")) if nan_here() else o)(compute(x1, x2))
    trainer = Trainer(strategy="ddp", accelerator="cpu", devices=2, max_steps=6, limit_val_batches=0, log_every_n_steps=1, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    try:
        trainer.fit(model, datamodule=RandomImages(batch_size=8, val_size=32))
        stopped = {"message": None}
    except TrainingDivergedError as error:
        stopped = {"message": str(error)}
    torch.save({**stopped, "global_step": trainer.global_step}, out / f"diverged-{trainer.global_rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
