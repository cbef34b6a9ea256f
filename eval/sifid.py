"""SIFID: single-image Fréchet Inception distance (Shaham et al., SinGAN, 2019).

Each image is described by the Inception features of every spatial position
of one layer's map, computed at the image's own size (no resizing). SIFID of
a generated image is the Fréchet distance between the Gaussian statistics
(mean, covariance over positions) of the real image's features and its own;
the reported score is the mean over N generated images. Two feature layers:

- `block1` (default): pytorch-fid's FID Inception (the FID weights), block 1:
  the 192 channels of Conv2d_4a after the second max pooling
  (`InceptionV3([1])`). Its weights come with `python eval/inception_weights.py`.
- `authors`: the SinGAN authors' released SIFID code: torchvision's ImageNet
  InceptionV3 (`inception_v3_google-0cc3c7bd.pth`) up to Conv2d_2b, the 64
  channels before the first max pooling, on images scaled to [-1, 1]. Use it
  to compare with published SIFID values. torchvision downloads those weights
  from download.pytorch.org on first use; a machine that cannot reach it needs
  the file copied into torch hub's checkpoints folder.

The two give numbers on different scales: compare SIFID only between runs
measured the same way.

    python eval/sifid.py --ckpt runs/singan-1/checkpoints/last.pt [--num-samples 50] [--seed 0] [--json]
    python eval/sifid.py --real image.png --fake samples_dir/ [--features authors] [--json]

With `--ckpt` the real image is the one stored in the checkpoint (the finest
training scale) and the samples come from the checkpoint's generator at the
training size. `--json` prints exactly one JSON object on the last line:
`{"sifid": ..., "sifid_std": ..., "num_fake": ...}`; progress (generating, SIFID
features) goes to stderr.

Square images need 27 px for block 1 to have a position, 35 px for more than
one (7 px and 9 px for `authors`); the fewer positions, the noisier the
covariance (at SinGAN's 250 px: 28x28 = 784 positions of 192-d features for
block 1, 122x122 of 64-d for `authors`).
"""

import os
import sys

if __package__ in (None, ""):
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse
import json
from typing import Callable

import numpy as np
import torch

from eval.metrics import frechet_distance
from training.progress import Progress

FeatureExtractor = Callable[[torch.Tensor], torch.Tensor]  # uint8 [N, C, H, W] -> float [N, D, h, w]


class ImageTooSmall(ValueError):
    """The feature map has fewer than two positions: no covariance to compare."""


def feature_statistics(features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance over the positions of one feature map [D, h, w], in float64."""
    samples = features.detach().to(torch.float64).flatten(1).T.cpu().numpy()  # [positions, D]
    if len(samples) < 2:
        raise ImageTooSmall(f"SIFID: the feature map has {len(samples)} position(s); the image is too small "
                            f"(block 1 needs about 35 px on the short side)")
    return samples.mean(axis=0), np.cov(samples, rowvar=False)


class InceptionFeatures:
    """pytorch-fid's FID Inception up to block 1 (192-d, after the second max pooling), at the
    input's own size (no resizing): uint8 [N, C, H, W] -> float [N, 192, h, w]."""

    def __init__(self, device):
        from eval.inception import feature_extractor
        self.network = feature_extractor(device, blocks=(1,), resize=False)

    @staticmethod
    def feature_size(height: int, width: int) -> tuple[int, int]:
        """The block's map size for an input size (0 where the input is too small for its pooling)."""

        def side(s):
            s = AuthorsFeatures.feature_size(s, s)[0]  # Conv2d_1a (3x3, stride 2), Conv2d_2a (3x3), Conv2d_2b
            if s < 3:
                return 0
            s = (s - 3) // 2 + 1 - 2  # max pool 1 (3, stride 2), Conv2d_3b (1x1), Conv2d_4a (3x3)
            return (s - 3) // 2 + 1 if s >= 3 else 0  # max pool 2: block 1 ends here

        return side(height), side(width)

    def __call__(self, images_uint8: torch.Tensor) -> torch.Tensor:
        check_positions(self.feature_size(*images_uint8.shape[-2:]), images_uint8, "Inception block 1")
        return self.network(images_uint8)[0]


TORCHVISION_WEIGHTS_URL = "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth"


def torchvision_weights_path() -> str:
    """Where torchvision keeps its ImageNet InceptionV3 weights (torch hub's checkpoints folder)."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(TORCHVISION_WEIGHTS_URL))


class AuthorsFeatures:
    """The SinGAN authors' SIFID features: torchvision's ImageNet InceptionV3 through Conv2d_2b_3x3,
    the 64 channels before the first max pooling, on uint8 / 255 scaled to [-1, 1] (their code runs
    the layers directly, so torchvision's `transform_input` is not applied): uint8 [N, C, H, W] ->
    float [N, 64, h, w]. `state_dict` replaces the ImageNet weights (tests)."""

    def __init__(self, device, state_dict: dict | None = None):
        import torchvision
        network = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
        network.load_state_dict(state_dict if state_dict is not None else self.imagenet_weights())
        self.device = torch.device(device)
        self.network = torch.nn.Sequential(network.Conv2d_1a_3x3, network.Conv2d_2a_3x3, network.Conv2d_2b_3x3)
        self.network = self.network.eval().requires_grad_(False).to(self.device)

    @staticmethod
    def imagenet_weights() -> dict:
        from eval.inception_weights import WeightsError
        path = torchvision_weights_path()
        try:
            if os.path.isfile(path):
                return torch.load(path, map_location="cpu", weights_only=True)
            return torch.hub.load_state_dict_from_url(TORCHVISION_WEIGHTS_URL, map_location="cpu", progress=False,
                                                      check_hash=True)
        except Exception as error:  # no network, a truncated file: the same advice
            raise WeightsError(f"the authors' SIFID needs torchvision's ImageNet InceptionV3 weights at {path} "
                               f"({type(error).__name__}); copy {TORCHVISION_WEIGHTS_URL} there, or use the "
                               f"default block1 features") from None

    @staticmethod
    def feature_size(height: int, width: int) -> tuple[int, int]:
        """Conv2d_1a (3x3, stride 2), Conv2d_2a (3x3), Conv2d_2b (3x3, padded): the map size."""

        def side(s):
            return max(0, (s - 3) // 2 + 1 - 2) if s >= 3 else 0

        return side(height), side(width)

    @torch.no_grad()
    def __call__(self, images_uint8: torch.Tensor) -> torch.Tensor:
        check_positions(self.feature_size(*images_uint8.shape[-2:]), images_uint8, "the authors' layer")
        x = images_uint8.to(self.device)
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        return self.network(x.float() / 255 * 2 - 1)


FEATURES = {"block1": InceptionFeatures, "authors": AuthorsFeatures}


def check_positions(size: tuple[int, int], images_uint8: torch.Tensor, layer: str) -> None:
    if size[0] * size[1] < 2:
        raise ImageTooSmall(f"SIFID: a {images_uint8.shape[-2]}x{images_uint8.shape[-1]} image gives "
                            f"{size[0]}x{size[1]} positions of {layer}; it is too small")


class SIFID:
    """SIFID of generated images against one real image.

    Args:
        real_uint8: the real image, uint8 [C, H, W]
        device:     where the feature extractor runs
        features:   feature extractor; default: FEATURES[`layer`]; tests pass a small stand-in
        batch_size: generated images per extractor call
        layer:      "block1" (pytorch-fid's block 1, 192-d) or "authors" (the SinGAN authors' 64-d)
    """

    def __init__(self, real_uint8: torch.Tensor, device="cpu", features: FeatureExtractor | None = None,
                 batch_size: int = 16, layer: str = "block1"):
        self.features = features or FEATURES[layer](device)
        self.batch_size = batch_size
        self.real_stats = feature_statistics(self.features(real_uint8[None])[0])

    def scores(self, fakes_uint8: torch.Tensor, progress: str | None = None) -> np.ndarray:
        """SIFID of each generated image (uint8 [N, C, H, W]; any size, usually the real one's);
        `progress`: a bar's label."""
        values = []
        with Progress(progress, total=len(fakes_uint8), unit="img") as bar:
            for start in range(0, len(fakes_uint8), self.batch_size):
                for features in self.features(fakes_uint8[start:start + self.batch_size]):
                    values.append(frechet_distance(*self.real_stats, *feature_statistics(features)))
                bar.set(len(values))
        return np.array(values)

    def evaluate(self, fakes_uint8: torch.Tensor) -> dict[str, float]:
        """{'sifid': mean, 'sifid_std': standard deviation over images, 'num_fake': N}."""
        values = self.scores(fakes_uint8, progress="SIFID")
        return {"sifid": float(values.mean()), "sifid_std": float(values.std()), "num_fake": len(values)}


# ---------------------------------------------------------------------------
# Command line

def _samples_from_checkpoint(path: str, num_samples: int, seed: int, batch_size: int, device):
    """(real image, generated images) of a SinGAN checkpoint, uint8."""
    import nets
    from eval.generate import generate
    from training.checkpoint import CheckpointError, load_checkpoint
    checkpoint = load_checkpoint(path)
    if checkpoint["model"] != "singan":
        raise CheckpointError(f"{path} is a {checkpoint['model']} checkpoint; SIFID compares SinGAN samples "
                              f"with their single training image")
    sampler = nets.load_sampler(checkpoint, device, seed=seed)
    return checkpoint["real"], generate(sampler, torch.arange(num_samples), batch_size, progress="generate")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", help="SinGAN checkpoint: its stored real image against its samples")
    parser.add_argument("--num-samples", type=int, default=50, help="samples drawn from --ckpt")
    parser.add_argument("--seed", type=int, default=0, help="sample seed for --ckpt")
    parser.add_argument("--real", help="the real image file")
    parser.add_argument("--fake", help="a generated image file, or a folder of them (recursive)")
    parser.add_argument("--channels", type=int, choices=(1, 3), default=3, help="read --real/--fake as 1 or 3 channels")
    parser.add_argument("--features", choices=tuple(FEATURES), default="block1",
                        help="block1: pytorch-fid's block 1, 192-d (default); authors: the SinGAN authors' "
                             "code, 64-d, torchvision's ImageNet weights")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    args = parser.parse_args(argv)
    if args.ckpt is None and not (args.real and args.fake) or args.ckpt and (args.real or args.fake):
        parser.error("give --ckpt, or both --real and --fake")

    from eval.inception_weights import WeightsError
    from training.checkpoint import CheckpointError
    from training.data import DataError, image_sources, load_image_full
    try:
        if args.ckpt:
            real, fakes = _samples_from_checkpoint(args.ckpt, args.num_samples, args.seed, args.batch_size,
                                                   args.device)
            result = SIFID(real, args.device, batch_size=args.batch_size, layer=args.features).evaluate(fakes)
        else:
            real = load_image_full(args.real, args.channels)
            fakes = [load_image_full(name, args.channels) for name, _ in image_sources(args.fake)]
            if not fakes:
                raise DataError(f"--fake: no images in {args.fake}")
            metric = SIFID(real, args.device, batch_size=1, layer=args.features)  # the files may differ in size
            values = []
            with Progress("SIFID", total=len(fakes), unit="img") as bar:
                for fake in fakes:
                    values.append(metric.scores(fake[None]))
                    bar.update()
            values = np.concatenate(values)
            result = {"sifid": float(values.mean()), "sifid_std": float(values.std()), "num_fake": len(values)}
    except (WeightsError, CheckpointError, DataError, ImageTooSmall) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    else:
        print(f"SIFID {result['sifid']:.4f} (std {result['sifid_std']:.4f}) over {result['num_fake']} images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
