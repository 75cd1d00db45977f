"""Convert the FID Inception weights users already have into the npz the Flax port loads.

    python -m jaxmedgan.evaluators.inception_convert \
        --pth pt_inception-2015-12-05-6726825d.pth --out inception_fid.npz

The input is pytorch-fid's state dict (torchvision Inception3 names, num_classes=1008, no aux
head). Conversion needs torch (to unpickle the .pth) and nothing else; the npz it writes needs
only numpy and is what `jaxmedgan evaluate --features inception --inception-weights FILE` reads.
Layout changes: conv kernels OIHW -> HWIO; BatchNorm weight/bias -> params scale/bias,
running_mean/var -> batch_stats mean/var; `num_batches_tracked` and the 1008-way `fc` (not
part of the pool3 features) are dropped. Nothing is downloaded.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
import sys
from typing import Mapping, Sequence

import numpy as np

from jaxmedgan import atomic_io
from jaxmedgan.models import inception

log = logging.getLogger(__name__)

# Torch-hub convention: the 8 hex digits in the file name are the start of its SHA-256.
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8})\.pth$")
_DROPPED = re.compile(r"^(fc\.(weight|bias)|.*\.num_batches_tracked)$")
_BN = {"weight": ("params", "scale"), "bias": ("params", "bias"),
       "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}


def convert_state_dict(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Flat npz arrays {'params/Mixed_5b/branch1x1/conv/kernel': f32 [1,1,192,64], ...} from a torch state dict.

    Validated against `models.inception.InceptionV3FID` (every variable present, every shape right).
    """
    out: dict[str, np.ndarray] = {}
    unknown = []
    for key, value in state_dict.items():
        if hasattr(value, "detach"):  # a torch tensor
            value = value.detach().cpu().numpy()
        value = np.asarray(value, np.float32)
        if _DROPPED.match(key):
            continue
        parts = key.split(".")
        module, layer, leaf = parts[:-2], parts[-2], parts[-1]
        if layer == "conv" and leaf == "weight" and value.ndim == 4:
            out["/".join(["params", *module, "conv", "kernel"])] = np.transpose(value, (2, 3, 1, 0))  # OIHW -> HWIO
        elif layer == "bn" and leaf in _BN:
            collection, name = _BN[leaf]
            out["/".join([collection, *module, "bn", name])] = value
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"State dict entries that are not part of the FID Inception-v3: {unknown[:8]}"
                         f"{' ...' if len(unknown) > 8 else ''}. Is this pytorch-fid's "
                         "pt_inception-2015-12-05-6726825d.pth?")
    inception.variables_from_flat(out, where="converted state dict")  # raises on any mismatch
    return out


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def convert_file(pth: str, out: str) -> dict[str, np.ndarray]:
    """Reads the torch file `pth`, writes `out` (npz, atomically) and returns the arrays."""
    try:
        import torch
    except ImportError:
        raise ImportError("Converting a .pth file needs torch (`pip install torch`); the converted npz "
                          "does not.") from None
    if not os.path.isfile(pth):
        raise FileNotFoundError(f"--pth {pth!r} does not exist.")
    digest = _sha256(pth)
    m = _HASH_IN_NAME.search(os.path.basename(pth))
    if m and not digest.startswith(m.group(1)):
        raise ValueError(f"{pth}: SHA-256 {digest[:16]}... does not start with the {m.group(1)} in its "
                         "name; the download is probably truncated or corrupted.")
    state = torch.load(pth, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and not any(k.endswith(".weight") for k in state):
        state = state["state_dict"]
    arrays = convert_state_dict(state)
    atomic_io.write_npz(out, arrays, compressed=False)
    log.info("Wrote %s: %d arrays, %d values, from %s (sha256 %s).", out, len(arrays),
             sum(a.size for a in arrays.values()), pth, digest)
    return arrays


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxmedgan.evaluators.inception_convert",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--pth", required=True, help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth")
    parser.add_argument("--out", required=True, help="npz to write (e.g. inception_fid.npz)")
    args = parser.parse_args(argv)
    arrays = convert_file(args.pth, args.out)
    print(f"wrote {args.out}: {len(arrays)} arrays, {sum(a.size for a in arrays.values()):,} values")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(main())
