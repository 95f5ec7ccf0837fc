"""``ssl-lightning visualize embeddings|neighbours|views ...``: the command line of
``ssl_lightning.visualize`` (which draws, and knows nothing of the command line)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ssl_lightning import visualize
from ssl_lightning.cli.parsing import choose, run_function
from ssl_lightning.outputs import OVERWRITE_HELP


def main(args: list[str]) -> None:
    """``ssl-lightning visualize embeddings|neighbours|views ...``."""
    commands = {"embeddings": visualize.embeddings, "neighbours": visualize.neighbours, "views": visualize.views}
    name = choose(args, {name: command.__doc__.split("\n")[0] for name, command in commands.items()}, "ssl-lightning visualize",
                  epilog=visualize.__doc__.split("\n\n")[2].replace("\n", " "))
    prog = f"ssl-lightning visualize {name}"
    if name == "views":
        parser = argparse.ArgumentParser(prog=prog, description=visualize.views.__doc__, allow_abbrev=False,
                                         epilog="Every other option is fit's: --config CONFIG.yaml [--data.* --model.* ...]")
        parser.add_argument("--num_images", type=int, default=8)
        parser.add_argument("--draws", type=int, default=2, help="random draws of each view")
        parser.add_argument("--output_dir", type=Path)
        parser.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
        own, rest = parser.parse_known_args(args[1:])
        written = [config_views(rest, **vars(own))]
    else:
        result = run_function(commands[name], prog, args[1:], default_data="ssl_lightning.data.FashionMNISTDataModule",
                              flags={"overwrite": OVERWRITE_HELP})
        written = result if isinstance(result, list) else [result]
    print(f"wrote {', '.join(str(p) for p in written)} (folder: {written[0].parent})")


def config_views(cli_args: list[str], num_images: int, draws: int, output_dir: Path | None, overwrite: bool) -> Path:
    """``visualize.views`` of the method and data that fit's arguments ``cli_args`` build."""
    from ssl_lightning.cli.lightning import make_cli, with_packaged_configs

    folder = visualize.views_folder(num_images, draws, output_dir, overwrite)  # bad counts or folders fail before the config is built
    cli = make_cli(with_packaged_configs(cli_args), run=False)  # --config simclr, as fit takes it
    return visualize.views(cli.model, cli.datamodule, num_images, draws, output_dir=folder, overwrite=overwrite)
