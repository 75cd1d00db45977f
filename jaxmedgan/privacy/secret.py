"""The secret randomness of a DP run: Poisson batch membership and the Gaussian noise.

DP-SGD's guarantee holds only if an attacker cannot predict which examples were sampled or what
noise was added. Both therefore come from 256 bits drawn from the OS CSPRNG (`secrets`) at a run's
first start and kept only in `WORKDIR/private/dp_secret.json` (folder 0700, file 0600): never in
config.json, a checkpoint, metrics, TensorBoard or anything `export` writes. Resuming reads the
same secret back, so a resumed run is bitwise equal to an uninterrupted one. Per step k,

    membership rng = numpy Generator(SeedSequence([*secret words, SAMPLING_TAG, k]))
    partition rng  = numpy Generator(SeedSequence([*secret words, PARTITION_TAG])) (band_mf's groups)
    noise key      = SeedSequence([*secret words, NOISE_TAG, k]) -> uint32[2] (a raw threefry key)

band_mf's streaming noise state (`noise.CorrelatedNoiseState`, a function of past noise draws) is
secret too: checkpoints hold zeros in its place and the real one is written beside the secret as
`WORKDIR/private/noise_state_<step>.npz` (0600) for every checkpoint step (`save_noise_state`).

`privacy.secure_rng=False` derives the same streams from `config.seed` instead: reproducible from
the config alone, so the noise can be subtracted by anyone holding it (debugging only; the export
manifest says "noise derivable from the seed").
"""
from __future__ import annotations

import dataclasses
import glob
import json
import os
import secrets
import numpy as np

from jaxmedgan import atomic_io

PRIVATE_DIR = "private"
SECRET_FILE = "dp_secret.json"
SAMPLING_TAG, NOISE_TAG, PARTITION_TAG = 0x53414D50, 0x4E4F4953, 0x50415254  # "SAMP", "NOIS", "PART"
SECRET_BITS = 256
NOISE_KEY_FIELD = "dp_noise_key"  # the batch field that carries step k's noise key (data/pipeline.py)
CANARY_FIELD = "dp_canaries"  # ... and step k's active white-box canaries (privacy/canaries.py)


@dataclasses.dataclass(frozen=True)
class Secret:
    """Entropy words for the private streams and where they came from."""

    words: tuple[int, ...]  # uint32 words
    source: str  # "os-csprng" or "config-seed" (public: privacy.secure_rng=False)

    def sampling_rng(self, step: int) -> np.random.Generator:
        """The generator that draws step `step`'s Poisson batch membership."""
        return np.random.default_rng(np.random.SeedSequence([*self.words, SAMPLING_TAG, int(step)]))

    def partition_rng(self) -> np.random.Generator:
        """The generator that draws cyclic Poisson sampling's groups, once per run (band_mf)."""
        return np.random.default_rng(np.random.SeedSequence([*self.words, PARTITION_TAG]))

    def noise_key(self, step: int) -> np.ndarray:
        """uint32 [2]: the raw threefry key of step `step`'s one Gaussian noise draw."""
        return np.random.SeedSequence([*self.words, NOISE_TAG, int(step)]).generate_state(2, np.uint32)

    @property
    def public(self) -> bool:
        """True when the streams follow from the config (secure_rng=False)."""
        return self.source == "config-seed"

    def __repr__(self) -> str:  # never print the entropy (logs, tracebacks)
        return f"Secret(source={self.source!r}, words=<{len(self.words)} hidden>)"


def path(workdir: str) -> str:
    """WORKDIR/private/dp_secret.json."""
    return os.path.join(workdir, PRIVATE_DIR, SECRET_FILE)


def from_seed(seed: int) -> Secret:
    """The public streams of `privacy.secure_rng=False`: derived from `config.seed`."""
    return Secret(tuple(int(w) for w in np.random.SeedSequence([int(seed)]).generate_state(8, np.uint32)),
                  "config-seed")


def private_dir(workdir: str) -> str:
    """WORKDIR/private, created with mode 0700 (owner only)."""
    folder = os.path.join(workdir, PRIVATE_DIR)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    os.chmod(folder, 0o700)
    return folder


def _write(file: str, secret: Secret) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump({"source": secret.source, "words": list(secret.words)}, f)
            f.flush()
            os.fsync(f.fileno())

    atomic_io.write_file(file, write, mode=0o600)  # never a half-written secret, readable by its owner only


def _read(file: str) -> Secret:
    try:
        with open(file) as f:
            data = json.load(f)
        words = tuple(int(w) for w in data["words"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"Cannot read the DP secret {file}: {e}. It holds the randomness of a private run; "
                         "restore it from a backup or start a new workdir.") from None
    if len(words) * 32 < SECRET_BITS or data.get("source") != "os-csprng":
        raise ValueError(f"{file} is not a jaxmedgan DP secret ({len(words)} words, source "
                         f"{data.get('source')!r}); start a new workdir.")
    return Secret(words, "os-csprng")


def load_or_create(workdir: str, *, secure: bool, seed: int, resuming: bool, is_main: bool = True,
                   broadcast=None) -> Secret:
    """The run's secret: read from the workdir, or (first start) drawn from the OS CSPRNG and saved.

    secure=False: `from_seed(seed)` (public). resuming=True with no secret on disk is refused (the
    run could not continue its streams). Many processes: process 0 reads or creates it and
    `broadcast(np.ndarray) -> np.ndarray` (e.g. multihost_utils.broadcast_one_to_all) hands the
    words to the others, so no other host needs the file.
    """
    if not secure:
        return from_seed(seed)
    file = path(workdir)
    words = np.zeros(SECRET_BITS // 32, np.uint32)
    if is_main:
        if os.path.exists(file):
            words = np.asarray(_read(file).words, np.uint32)
        elif resuming:
            raise ValueError(f"This differentially private run has checkpoints but no secret at {file}: the "
                             "private sampling and noise streams cannot be continued. Restore the file (it "
                             "is never copied into checkpoints or exports) or start a new workdir.")
        else:
            words = np.frombuffer(secrets.token_bytes(SECRET_BITS // 8), np.uint32).copy()
            private_dir(workdir)
            _write(file, Secret(tuple(int(w) for w in words), "os-csprng"))
    if broadcast is not None:
        words = np.asarray(broadcast(words), np.uint32)
    return Secret(tuple(int(w) for w in words), "os-csprng")


NOISE_STATE_PREFIX = "noise_state_"


def noise_state_path(workdir: str, step: int) -> str:
    """WORKDIR/private/noise_state_<step>.npz: band_mf's streaming noise state at checkpoint `step`."""
    return os.path.join(workdir, PRIVATE_DIR, f"{NOISE_STATE_PREFIX}{int(step)}.npz")


def save_noise_state(workdir: str, step: int, leaves: list[np.ndarray]) -> str:
    """Writes the streaming noise state's leaves (in tree order) for checkpoint `step` (atomic, 0600,
    in the 0700 private folder). Call before the checkpoint itself is saved, so a checkpoint never
    exists without its noise state."""
    private_dir(workdir)
    return atomic_io.write_npz(noise_state_path(workdir, step),
                               {f"leaf_{i}": np.asarray(x) for i, x in enumerate(leaves)}, compressed=False,
                               mode=0o600)


def load_noise_state(workdir: str, step: int, like: list) -> list[np.ndarray]:
    """The leaves saved by `save_noise_state` for `step`, checked against `like` (arrays or
    ShapeDtypeStructs of the expected leaves); ValueError naming the file when missing or different."""
    file = noise_state_path(workdir, step)
    if not os.path.exists(file):
        raise ValueError(f"This band_mf run resumes from checkpoint {step} but its secret noise state {file} is "
                         "missing: the correlated noise cannot be continued. Restore the file (it is never "
                         "copied into checkpoints or exports) or start a new workdir.")
    with np.load(file) as data:
        leaves = [data[f"leaf_{i}"] for i in range(len(data.files))]
    shapes = [(tuple(x.shape), np.dtype(x.dtype)) for x in like]
    if [(x.shape, x.dtype) for x in leaves] != shapes:
        raise ValueError(f"{file} holds {len(leaves)} arrays that do not match this run's noise state "
                         f"({len(shapes)} arrays); was the model or privacy config changed?")
    return leaves


def prune_noise_states(workdir: str, keep_from: int) -> None:
    """Removes saved noise states of steps before `keep_from` (the oldest checkpoint still kept)."""
    for file in glob.glob(os.path.join(workdir, PRIVATE_DIR, f"{NOISE_STATE_PREFIX}*.npz")):
        step = os.path.basename(file)[len(NOISE_STATE_PREFIX):-len(".npz")]
        if step.isdigit() and int(step) < keep_from:
            os.remove(file)
