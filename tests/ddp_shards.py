"""Two epochs of DDP training on sharded datasets, 2 CPU processes (gloo), run by test_shards.py as
``python tests/ddp_shards.py OUT_DIR SHARDS [SHARDS ...]``. Lightning's launcher starts the second
process by running this script again. Each process saves, for each dataset, the labels of every
batch it trained on, by epoch, to OUT_DIR/<dataset>-<rank>.pt."""

import sys
from pathlib import Path

import torch
from pytorch_lightning import LightningModule, Trainer

from ssl_lightning.data import ShardedDataModule


class RecordBatches(LightningModule):
    """Trains one weight; keeps the labels of each batch it is given (epoch -> list of (B,))."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.batches: dict[int, list[torch.Tensor]] = {}

    def training_step(self, batch, batch_idx):
        images, labels = batch
        self.batches.setdefault(self.current_epoch, []).append(labels.clone())
        return self.weight * images.float().mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def main(out: Path, datasets: list[str]) -> None:
    for folder in datasets:
        model = RecordBatches()
        trainer = Trainer(strategy="ddp", accelerator="cpu", devices=2, max_epochs=2, limit_val_batches=0, logger=False,
                          enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
        trainer.fit(model, datamodule=ShardedDataModule(folder, batch_size=8))
        torch.save(model.batches, out / f"{Path(folder).name}-{trainer.global_rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
