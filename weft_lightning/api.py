"""The Python API: build a model from its configs, load a trained one, predict maps.

    from weft_lightning.api import load_model, predict

    model = load_model("runs/demo")          # a run folder (its best checkpoint) or a .ckpt file
    prob = predict(model, "scene.jpg")       # (H, W) float32 foreground probability
    maps = predict(model, "my_images/")      # {stem: map} for every image of a folder

A loaded model carries what ``weft predict`` uses: the trained weights, the normalisation of
the data config and the model's test protocol, so both give the same maps.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from weft_lightning.checkpoint import lightning_checkpoint, restore_checkpoint, stored_config
from weft_lightning.data.catalog import Stats
from weft_lightning.data.dataset import list_images, read_image
from weft_lightning.data.transforms import eval_transform
from weft_lightning.inference import InferenceProtocol
from weft_lightning.lightning_cli import build_cli, find_checkpoint
from weft_lightning.module import WEFTModule

__all__ = ["Predictor", "build_model", "load_model", "predict"]

ConfigPaths = str | Path | Sequence[str | Path]
RUN_SECTIONS = ("seed_everything", "trainer", "model", "data", "nan_guard")


def build_model(config: ConfigPaths, overrides: Sequence[str] = ()) -> WEFTModule:
    """Instantiate the ``model`` of one or more config files (nothing is trained or loaded).

    A run config, a model-only config fragment, or a segmentor file (a ``class_path`` config of
    a Segmentor, e.g. ``configs/model/weft_l_paper.yaml``) is enough. ``overrides`` are CLI
    arguments such as ``--model.init_args.lr=1e-4``.
    """
    paths = [config] if isinstance(config, str | Path) else list(config)
    args: list[str] = ["--data", "weft_lightning.data.datamodule.SegmentationDataModule"]
    for path in paths:
        args += _config_args(Path(path))
    cli = build_cli([*args, *overrides, "--trainer.logger", "false"], run=False)
    return cli.model


def _config_args(path: Path) -> list[str]:
    """``--config PATH`` for CLI configs; a segmentor file becomes the model's segmentor."""
    content = yaml.safe_load(path.read_text()) if path.is_file() else None
    if isinstance(content, dict) and "class_path" in content:
        return [
            "--model",
            "weft_lightning.module.WEFTModule",
            "--model.init_args.segmentor",
            str(path),
        ]
    return ["--config", str(path)]


@dataclass
class Predictor:
    """A trained model ready to predict: the module in eval mode, the normalisation its data
    config gives predicted images, and its test protocol."""

    module: WEFTModule
    stats: Stats
    checkpoint: Path | None = None

    @property
    def protocol(self) -> InferenceProtocol:
        """The test protocol maps are computed with (``model.protocol.test``)."""
        return self.module.protocol.test

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def __post_init__(self) -> None:
        self._transform = eval_transform(self.stats.mean, self.stats.std)

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """An RGB uint8 image (H, W, 3) as the normalised tensor (3, H, W) the model takes."""
        return self._transform(image=image)["image"].to(self.device)

    def __call__(
        self, image: np.ndarray | str | Path, protocol: InferenceProtocol | None = None
    ) -> np.ndarray:
        """Foreground probability (H, W, float32) of one image (array or file)."""
        array = read_image(Path(image)) if isinstance(image, str | Path) else image
        tensor = self.preprocess(np.ascontiguousarray(array))
        (prob,) = self.module.predict_maps([tensor], protocol or self.protocol)
        return prob.float().cpu().numpy()


def load_model(
    source: str | Path, overrides: Sequence[str] = (), device: str | torch.device = "cpu"
) -> Predictor:
    """A trained model from a checkpoint file or a run folder (its ``best`` checkpoint, else
    its ``last``), rebuilt from the config the checkpoint stores.

    ``overrides`` change that config (e.g. ``--model.init_args.protocol.test.flip=false``).
    """
    path = _checkpoint_file(Path(source))
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "config.yaml"
        config.write_text(yaml.safe_dump(_model_config(stored_config(path))))
        cli = build_cli(
            ["--config", str(config), *overrides, "--trainer.logger", "false"], run=False
        )
    module: WEFTModule = cli.model
    checkpoint = lightning_checkpoint(path)
    restore_checkpoint(module, checkpoint, str(path))
    module.load_state_dict(checkpoint["state_dict"])
    module.to(device).eval()
    return Predictor(module, cli.datamodule.eval_stats(None), path)


def _checkpoint_file(source: Path) -> Path:
    if source.is_dir():
        try:
            return find_checkpoint(source, "best")
        except FileNotFoundError:
            return find_checkpoint(source, "last")
    if not source.is_file():
        raise FileNotFoundError(f"Checkpoint or run folder {source} does not exist.")
    return source


def _model_config(text: str) -> dict:
    """The stored run config without the arguments of its subcommand (``ckpt_path``,
    ``weights_only``, ...): the sections that build the run."""
    config = yaml.safe_load(text)
    return {key: config[key] for key in RUN_SECTIONS if key in config}


def predict(
    model: Predictor, source: np.ndarray | str | Path, protocol: InferenceProtocol | None = None
) -> np.ndarray | dict[str, np.ndarray]:
    """Foreground probability maps at each image's size: one (H, W) array for an image (array
    or file), ``{stem: map}`` for a folder of images."""
    if isinstance(source, str | Path) and Path(source).is_dir():
        return {stem: model(path, protocol) for stem, path in list_images(Path(source)).items()}
    if isinstance(source, str | Path) and not Path(source).is_file():
        raise FileNotFoundError(f"Image or folder {source} does not exist.")
    return model(source, protocol)
