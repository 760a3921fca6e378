"""The tabular sets of the MAF paper (Papamakarios, Pavlakou & Murray 2017): POWER, GAS,
HEPMASS, MINIBOONE and BSDS300, as standardised continuous vectors with the authors'
fixed train/valid/test splits.

They are read from the layout of the archive the authors published (``data.tar.gz`` of
https://zenodo.org/record/1161203, named in the README of ``gpapamak/maf``), its folders
moved under ``<data dir>/maf/``::

    maf/power/data.npy            (N, 8) floats: the UCI household power table as the
                                  authors converted it (time of day the last column)
    maf/gas/ethylene_CO.npz       the archive's pandas pickle ethylene_CO.pickle, converted
                                  (:data:`GAS_CONVERSION`): arrays "data" (N, C), "columns" (C,)
    maf/hepmass/1000_train.csv    the UCI HEPMASS files (label first, 27 features, mass)
    maf/hepmass/1000_test.csv
    maf/miniboone/data.npy        (N, 43) floats: the signal events, outliers and
                                  repeated-value features already removed
    maf/BSDS300/BSDS300.hdf5      "train", "validation", "test" (n, 63): patches (needs h5py)

The steps of the authors' loaders (``datasets/*.py`` of ``gpapamak/maf``) are reproduced
on those files; none of the files is ever unpickled. The splits "take the last tenth" as
the authors do: test is the last ``int(0.1 N)`` rows, valid the last ``int(0.1 N')`` of the
remaining ``N'``, train the rest (HEPMASS: its own test file, valid the last tenth of the
train file). Values are float32 ``(n, D)``, standardised, *not* in [0, 1]: a flow models
them with ``[data] transform = []`` (its default ``binarize = "none"``).

pyro-vae has no checksums of these files on record (the archive could not be fetched or
checked where this was written), so ``pyro-vae fetch`` refuses them: place the files by
hand and name the data directory (``--data-dir``, ``[data] data_dir``).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from pyro_vae.data.errors import DataError, corrupt_file_error
from pyro_vae.data.paths import DataFile
from pyro_vae.data.splits import DataSplits

FOLDER = "maf"
ARCHIVE = "https://zenodo.org/record/1161203"

#: What a user with pandas runs once, where the file is trusted, to turn the archive's GAS
#: pickle into the file read here (loading a pickle runs code from it: pyro-vae never does).
GAS_CONVERSION = (
    "python -c \"import numpy as np, pandas as pd; d = pd.read_pickle('maf/gas/ethylene_CO.pickle'); "
    "np.savez('maf/gas/ethylene_CO.npz', data=d.to_numpy(dtype='float64'), columns=np.array(d.columns, dtype=str))\""
)

_GET = (f"download the MAF authors' archive data.tar.gz ({ARCHIVE}), unpack it and move the folders of its "
        f"data/ directory under <data dir>/{FOLDER}/, then name that data directory (--data-dir, [data] data_dir). "
        "pyro-vae has no checksums of these files on record, so `pyro-vae fetch` cannot download or verify them")


# ----------------------------------------------------------------------------- shared steps


def tail_splits(x: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(train, valid, test)`` of rows ``x (N, D)`` in file order, as the authors split:
    test the last ``int(0.1 N)`` rows, valid the last ``int(0.1 N')`` of the other ``N'``."""
    n_test = int(0.1 * len(x))
    rest = len(x) - n_test
    n_valid = int(0.1 * rest)
    if n_test < 1 or n_valid < 1:
        raise DataError(f"{where}: {len(x)} rows cannot be split into train/valid/test by tenths: need at least 11")
    return x[:rest - n_valid], x[rest - n_valid:rest], x[rest:]


def standardise(splits: Sequence[np.ndarray], mean: np.ndarray, std: np.ndarray, where: str) -> list[np.ndarray]:
    """``(x − mean) / std`` of each split; a column of zero spread is refused (it would be
    infinite), naming it."""
    flat = np.flatnonzero(~(std > 0))
    if flat.size:
        raise DataError(f"{where}: column(s) {flat.tolist()} hold a single value (zero spread) and cannot be "
                        "standardised: is this the data set's file?")
    return [(x - mean) / std for x in splits]


def _tensor(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def as_splits(name: str, train: np.ndarray, valid: np.ndarray, test: np.ndarray) -> DataSplits:
    """Float32 ``(n, D)`` splits named ``name``, no labels."""
    return DataSplits(name=name, train=_tensor(train), valid=_tensor(valid), test=_tensor(test),
                      event_shape=(train.shape[1],))


def _numbers(a: np.ndarray, path: Path, what: str, columns: int | None = None) -> np.ndarray:
    """``a`` as float64 ``(N, C)``, if it is a 2-D numeric array (of ``columns`` columns)."""
    if a.dtype.kind not in "biuf" or a.ndim != 2 or (columns is not None and a.shape[1] != columns):
        want = f"(N, {columns})" if columns is not None else "(N, C)"
        raise DataError(f"{path}: expected {what}, a numeric {want} array; got {a.dtype} {a.shape}")
    return a.astype(np.float64)


def _load_npy(path: Path, name: str, what: str, columns: int | None = None) -> np.ndarray:
    try:
        a = np.load(path, allow_pickle=False)  # never unpickle a file
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise corrupt_file_error(path, name, "a .npy array numpy can read (no pickles)", str(err)) from None
    if not isinstance(a, np.ndarray):
        raise DataError(f"{path}: expected one .npy array ({what}), found an .npz archive")
    return _numbers(a, path, what, columns)


# ----------------------------------------------------------------------------- POWER

#: POWER: the seed of the authors' shuffle and noise.
POWER_SEED = 42


def read_power(paths: Sequence[Path]) -> DataSplits:
    """POWER, D = 6 (``datasets/power.py``): the rows shuffled by ``RandomState(42)``;
    global intensity (column 3) and reactive power (column 1) dropped; uniform noise of
    widths 0.001 (active power), 0.01 (voltage) and 1 (the three sub-meterings), drawn from
    the same generator in the authors' order (voltage, active power, sub-meterings), none
    on the time; tail splits; standardised by the mean and (population) deviation of
    train and valid together."""
    (path,) = paths
    data = _load_npy(path, "power", "the 8 columns of the authors' power/data.npy", columns=8)
    rng = np.random.RandomState(POWER_SEED)
    rng.shuffle(data)
    data = np.delete(np.delete(data, 3, axis=1), 1, axis=1)
    n = len(data)
    voltage, active, metering = 0.01 * rng.rand(n, 1), 0.001 * rng.rand(n, 1), rng.rand(n, 3)
    data = data + np.hstack([active, voltage, metering, np.zeros((n, 1))])
    train, valid, test = tail_splits(data, str(path))
    fit = np.vstack([train, valid])
    return as_splits("power", *standardise((train, valid, test), fit.mean(0), fit.std(0), str(path)))


# ----------------------------------------------------------------------------- GAS

#: GAS: the columns the authors drop (the two gas concentrations and the time).
GAS_DROPPED = ("Meth", "Eth", "Time")
#: GAS: a column correlated above this with another is dropped, the first such one at a time.
GAS_MAX_CORRELATION = 0.98


def read_gas(paths: Sequence[Path]) -> DataSplits:
    """GAS, D = 8 (``datasets/gas.py``): the columns Meth, Eth and Time dropped; then, while
    some column is correlated above 0.98 (Pearson) with another, the first such column
    dropped; standardised by the whole table's mean and (sample, ddof = 1) deviation, as
    pandas computes them; tail splits in the pickle's row order (a random quarter of the
    UCI rows, drawn by the authors)."""
    (path,) = paths
    data, columns = _read_gas_npz(path)
    keep = [i for i, c in enumerate(columns) if c not in GAS_DROPPED]
    data = data[:, keep]
    data = data[:, _uncorrelated_columns(data)]
    (data,) = standardise([data], data.mean(0), data.std(0, ddof=1), str(path))
    return as_splits("gas", *tail_splits(data, str(path)))


def _read_gas_npz(path: Path) -> tuple[np.ndarray, list[str]]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, AttributeError) as err:
        raise corrupt_file_error(path, "gas", "an .npz of arrays 'data' and 'columns' (no pickles); convert the "
                                 f"archive's pickle with: {GAS_CONVERSION}", str(err)) from None
    if set(arrays) != {"data", "columns"} or arrays["columns"].dtype.kind != "U":
        raise DataError(f"{path}: expected the arrays 'data' (N, C) and 'columns' (C,) of strings, found "
                        f"{ {k: f'{a.dtype} {a.shape}' for k, a in arrays.items()} }; convert the archive's "
                        f"pickle with: {GAS_CONVERSION}")
    columns = [str(c) for c in arrays["columns"]]
    data = _numbers(arrays["data"], path, "the GAS table", columns=len(columns))
    missing = [c for c in GAS_DROPPED if c not in columns]
    if missing:
        raise DataError(f"{path}: the columns {missing} of the authors' GAS table are missing (found {columns})")
    return data, columns


def _uncorrelated_columns(data: np.ndarray) -> list[int]:
    """The columns of ``data (N, C)`` kept by the authors' pruning: while a column's
    correlation exceeds :data:`GAS_MAX_CORRELATION` with another, drop the first such one."""
    kept = list(range(data.shape[1]))
    while True:
        with np.errstate(divide="ignore", invalid="ignore"):  # a constant column: NaN, as pandas
            above = np.corrcoef(data[:, kept], rowvar=False) > GAS_MAX_CORRELATION
        over = np.flatnonzero(above.sum(1) > 1)  # each column is correlated 1 with itself
        if not over.size:
            return kept
        del kept[over[0]]


# ----------------------------------------------------------------------------- HEPMASS

#: HEPMASS: a feature whose smallest value occurs more often than this is dropped.
HEPMASS_MAX_REPEATS = 5


def read_hepmass(paths: Sequence[Path]) -> DataSplits:
    """HEPMASS, D = 21 (``datasets/hepmass.py``): the signal rows (label 1) of both files,
    the label dropped, and the test file's last column too (the authors' "messed up" file:
    the test keeps the train's first C − 1 columns); the features whose smallest value
    occurs more than 5 times among the train rows dropped (the authors' count: the first
    of the sorted values' counts), the train's last column (the mass) among them;
    standardised by the train rows' mean and (sample, ddof = 1) deviation; valid the last
    ``int(0.1 N)`` train rows.

    The counts are taken on the values as read rather than standardised (the same counts
    but for rounding), so that a constant column, which the authors' standardisation
    would turn into NaN, is dropped as repeated."""
    train_path, test_path = paths
    train, test = _signal_rows(train_path), _signal_rows(test_path)[:, :-1]
    if test.shape[1] != train.shape[1] - 1:
        raise DataError(f"{test_path}: {test.shape[1] + 1} columns after the label, but the train file "
                        f"{train_path} has {train.shape[1]}: the authors' test file has as many (its last one dropped)")
    repeated = [(column == column.min()).sum() > HEPMASS_MAX_REPEATS for column in train.T]
    if not repeated[-1]:
        raise DataError(f"{train_path}: its last column (the mass) varies among the signal rows, but the authors' "
                        "preprocessing drops it (the test file lacks it): is this the UCI file 1000_train.csv?")
    keep = [i for i, r in enumerate(repeated) if not r]
    train, test = train[:, keep], test[:, keep]
    train, test = standardise((train, test), train.mean(0), train.std(0, ddof=1), str(train_path))
    n_valid = int(0.1 * len(train))
    if n_valid < 1:
        raise DataError(f"{train_path}: {len(train)} signal rows cannot give a valid split by tenths: need 10")
    return as_splits("hepmass", train[:-n_valid], train[-n_valid:], test)


def _signal_rows(path: Path) -> np.ndarray:
    """The rows of label 1 of a HEPMASS CSV (header line first, label first), label dropped."""
    try:
        with open(path) as f:
            names = [n for n in f.readline().strip().split(",") if n.strip()]
        # usecols: a trailing delimiter (an empty field) past the header's names is ignored
        table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2, usecols=range(len(names)), dtype=np.float64)
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise corrupt_file_error(path, "hepmass", "a UCI HEPMASS CSV (a header line, then numbers)", str(err)) from None
    if table.shape[1] < 3:
        raise DataError(f"{path}: {table.shape[1]} columns; a HEPMASS CSV holds a label, the features and the mass")
    signal = table[table[:, 0] == 1][:, 1:]
    if not len(signal):
        raise DataError(f"{path}: no signal rows (label 1 in the first column); is this a UCI HEPMASS CSV?")
    return signal


# ----------------------------------------------------------------------------- MINIBOONE


def read_miniboone(paths: Sequence[Path]) -> DataSplits:
    """MINIBOONE, D = 43 (``datasets/miniboone.py``): the archive's table as it is (its
    preprocessing done), tail splits, standardised by the mean and (population) deviation
    of train and valid together."""
    (path,) = paths
    data = _load_npy(path, "miniboone", "the authors' miniboone/data.npy")
    train, valid, test = tail_splits(data, str(path))
    fit = np.vstack([train, valid])
    return as_splits("miniboone", *standardise((train, valid, test), fit.mean(0), fit.std(0), str(path)))


# ----------------------------------------------------------------------------- BSDS300

#: BSDS300: the HDF5 datasets of the splits.
BSDS300_SPLITS = ("train", "validation", "test")
H5PY_FIX = "install h5py (pip install h5py, or the package's extra: pip install 'pyro-vae[uci]')"


def read_bsds300(paths: Sequence[Path]) -> DataSplits:
    """BSDS300, D = 63 (``datasets/bsds300.py``): the archive's splits as they are (8x8
    patches, the authors' preprocessing done, the last pixel left out); needs h5py."""
    (path,) = paths
    try:
        import h5py
    except ImportError:
        raise DataError(f"{path} is HDF5, and reading it needs h5py, which is not installed: {H5PY_FIX}") from None
    try:
        with h5py.File(path, "r") as f:
            missing = [s for s in BSDS300_SPLITS if s not in f]
            if missing:
                raise DataError(f"{path}: no dataset(s) {missing}; the authors' file holds {list(BSDS300_SPLITS)}")
            splits = [_numbers(np.asarray(f[s]), path, f"the {s} patches") for s in BSDS300_SPLITS]
    except OSError as err:
        raise corrupt_file_error(path, "bsds300", "an HDF5 file h5py can read", str(err)) from None
    if len({s.shape[1] for s in splits}) > 1:
        raise DataError(f"{path}: the splits' patches differ in length: {[s.shape for s in splits]}")
    return as_splits("bsds300", *splits)


# ----------------------------------------------------------------------------- the registry's entries

#: name -> (description, D, files under maf/, reader, extra fix).
SETS: dict[str, tuple[str, int, tuple[str, ...], Callable[[Sequence[Path]], DataSplits], str]] = {
    "power": ("UCI household power (MAF's POWER), 6-d standardised", 6, ("power/data.npy",), read_power, ""),
    "gas": ("UCI gas sensors (MAF's GAS), 8-d standardised", 8, ("gas/ethylene_CO.npz",), read_gas,
            "; GAS ships as a pandas pickle (gas/ethylene_CO.pickle), which pyro-vae never unpickles (unpickling "
            "runs code from the file): convert it once, where you trust the file, by running in the data directory "
            f"{GAS_CONVERSION}"),
    "hepmass": ("UCI HEPMASS signal events (MAF's HEPMASS), 21-d standardised", 21,
                ("hepmass/1000_train.csv", "hepmass/1000_test.csv"), read_hepmass, ""),
    "miniboone": ("UCI MiniBooNE signal events (MAF's MINIBOONE), 43-d standardised", 43,
                  ("miniboone/data.npy",), read_miniboone, ""),
    "bsds300": ("BSDS300 8x8 natural-image patches (MAF's), 63-d", 63, ("BSDS300/BSDS300.hdf5",), read_bsds300,
                f"; reading BSDS300.hdf5 needs h5py: {H5PY_FIX}"),
}


def files(name: str) -> tuple[DataFile, ...]:
    """The files of set ``name`` under ``maf/``, no checksums on record."""
    return tuple(DataFile(f"{FOLDER}/{rel}") for rel in SETS[name][2])


def missing_fix(name: str) -> str:
    """How to get set ``name``'s files, for the messages of a missing file and of ``fetch``."""
    return _GET + SETS[name][4]


def reader(name: str) -> Callable[[Sequence[Path]], DataSplits]:
    """``paths -> DataSplits`` of set ``name``."""
    return SETS[name][3]
