"""The MAF paper's UCI sets (POWER, GAS, HEPMASS, MINIBOONE, BSDS300) on tiny files of each
layout made here: shapes, the authors' splits and standardisation, and the refusals
(a pickle never unpickled, HDF5 without h5py, no checksums for fetch)."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pyro_vae.config import Config
from pyro_vae.data import DATASETS, DataError, fetch, load_dataset, uci
from pyro_vae.train import train


def _place(root: Path, rel: str) -> Path:
    path = root / "maf" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _standardised(x: np.ndarray, fit: np.ndarray, ddof: int) -> np.ndarray:
    return ((x - fit.mean(0)) / fit.std(0, ddof=ddof)).astype(np.float32)


def _close(t: torch.Tensor, a: np.ndarray) -> None:
    torch.testing.assert_close(t, torch.from_numpy(np.asarray(a, dtype=np.float32)), rtol=1e-5, atol=1e-5)


def test_power_shuffles_drops_two_columns_adds_the_authors_noise_and_standardises(tmp_path):
    raw = np.random.default_rng(0).normal(size=(200, 8)) * 10 + 50
    np.save(_place(tmp_path, "power/data.npy"), raw)
    data = load_dataset("power", tmp_path)
    # RandomState(42): the row shuffle, then noise for voltage, active power, the sub-meterings
    rng = np.random.RandomState(42)
    order = np.arange(200)
    rng.shuffle(order)
    v, g, sm = 0.01 * rng.rand(200, 1), 0.001 * rng.rand(200, 1), rng.rand(200, 3)
    x = raw[order][:, [0, 2, 4, 5, 6, 7]] + np.hstack([g, v, sm, np.zeros((200, 1))])
    train, valid, test = x[:162], x[162:180], x[180:]  # test: last 20; valid: last 18 of 180
    fit = x[:180]
    for split, expected in zip((data.train, data.valid, data.test), (train, valid, test)):
        _close(split, _standardised(expected, fit, ddof=0))
    assert data.event_shape == DATASETS["power"].event_shape == (6,) and data.train_labels is None
    both = torch.cat([data.train, data.valid]).double()
    torch.testing.assert_close(both.mean(0), torch.zeros(6, dtype=torch.float64), atol=1e-6, rtol=0)
    assert data.sources and data.sources[0].label.endswith("maf/power/data.npy")


def test_power_with_another_number_of_columns_is_refused(tmp_path):
    np.save(_place(tmp_path, "power/data.npy"), np.zeros((50, 7)))
    with pytest.raises(DataError, match=r"expected the 8 columns .* a numeric \(N, 8\) array; got float64 \(50, 7\)"):
        load_dataset("power", tmp_path)


def _gas_table(n: int = 300) -> tuple[np.ndarray, list[str]]:
    """Time, Meth, Eth, then 8 pairs of sensors: a near copy of each sensor before it."""
    gen = np.random.default_rng(1)
    base = gen.normal(size=(n, 8))
    sensors = np.column_stack([c for b in base.T for c in (b + 0.01 * gen.normal(size=n), b)])
    names = ["Time", "Meth", "Eth"] + [f"s{i}" for i in range(16)]
    return np.column_stack([np.arange(n), gen.random(n), gen.random(n), sensors]), names


def test_gas_drops_the_concentrations_and_the_first_of_each_correlated_pair(tmp_path):
    table, names = _gas_table()
    np.savez(_place(tmp_path, "gas/ethylene_CO.npz"), data=table, columns=np.array(names))
    data = load_dataset("gas", tmp_path)
    kept = table[:, 4::2]  # the second of each pair: the first is dropped, one at a time
    x = _standardised(kept, kept, ddof=1)  # the whole table's mean and sample deviation
    _close(data.train, x[:243])
    _close(data.valid, x[243:270])
    _close(data.test, x[270:])
    assert data.event_shape == (8,)


def test_gas_as_the_archives_pickle_is_refused_unread_with_the_conversion(tmp_path):
    marker = tmp_path / "unpickled"

    class Trap:
        def __reduce__(self):
            return (Path.touch, (marker,))

    _place(tmp_path, "gas/ethylene_CO.pickle").write_bytes(pickle.dumps(Trap()))
    with pytest.raises(DataError, match=r"never unpickles.*np\.savez\('maf/gas/ethylene_CO\.npz'"):
        load_dataset("gas", tmp_path)
    # an .npz that holds pickled objects is not unpickled either
    np.savez(_place(tmp_path, "gas/ethylene_CO.npz"), data=np.array([Trap()], dtype=object),
             columns=np.array(["Time"]))
    with pytest.raises(DataError, match="no pickles"):
        load_dataset("gas", tmp_path)
    assert not marker.exists()


def _hepmass_csv(path: Path, rows: np.ndarray, trailing_comma: bool = False) -> None:
    header = ",".join(["# label"] + [f"f{i}" for i in range(27)] + ["mass"])
    lines = [",".join(f"{v:.6f}" for v in row) + ("," if trailing_comma else "") for row in rows]
    path.write_text(header + "\n" + "\n".join(lines) + "\n")


def _hepmass_rows(n: int, seed: int) -> np.ndarray:
    """Labels alternating 1, 0; 27 features, six of them with a repeated smallest value; mass 1000."""
    gen = np.random.default_rng(seed)
    features = gen.normal(size=(n, 27))
    for j in (2, 5, 9, 13, 20, 26):
        features[gen.random(n) < 0.3, j] = -4.0
    return np.column_stack([np.arange(n) % 2 == 0, features, np.full(n, 1000.0)])


def test_hepmass_keeps_the_signal_drops_repeated_features_and_standardises_by_train(tmp_path):
    train_rows, test_rows = _hepmass_rows(220, 2), _hepmass_rows(60, 3)
    _hepmass_csv(_place(tmp_path, "hepmass/1000_train.csv"), train_rows)
    _hepmass_csv(_place(tmp_path, "hepmass/1000_test.csv"), test_rows, trailing_comma=True)
    data = load_dataset("hepmass", tmp_path)
    keep = [j for j in range(27) if j not in (2, 5, 9, 13, 20, 26)]
    train = np.round(train_rows[train_rows[:, 0] == 1][:, 1:], 6)[:, keep]
    test = np.round(test_rows[test_rows[:, 0] == 1][:, 1:], 6)[:, keep]
    assert data.event_shape == (21,) and (len(data.train), len(data.valid), len(data.test)) == (99, 11, 30)
    _close(torch.cat([data.train, data.valid]), _standardised(train, train, ddof=1))
    _close(data.test, (test - train.mean(0)) / train.std(0, ddof=1))


def test_hepmass_whose_mass_varies_is_refused(tmp_path):
    rows = _hepmass_rows(60, 4)
    rows[:, -1] = np.arange(60)
    for name in ("1000_train.csv", "1000_test.csv"):
        _hepmass_csv(_place(tmp_path, f"hepmass/{name}"), rows)
    with pytest.raises(DataError, match=r"its last column \(the mass\) varies"):
        load_dataset("hepmass", tmp_path)


def test_miniboone_splits_by_tenths_from_the_end_and_standardises_by_train_and_valid(tmp_path):
    raw = np.random.default_rng(5).gamma(2.0, size=(100, 43))
    np.save(_place(tmp_path, "miniboone/data.npy"), raw)
    data = load_dataset("miniboone", tmp_path, train_size=50)
    fit = raw[:90]
    _close(data.valid, _standardised(raw[81:90], fit, ddof=0))
    _close(data.test, _standardised(raw[90:], fit, ddof=0))
    assert data.event_shape == (43,) and len(data.train) == 50  # a fixed subset of the 81 train rows
    np.save(_place(tmp_path, "miniboone/data.npy"), raw[:10])
    with pytest.raises(DataError, match="10 rows cannot be split into train/valid/test by tenths: need at least 11"):
        load_dataset("miniboone", tmp_path)


def test_bsds300_reads_the_splits_of_its_hdf5_file(tmp_path):
    h5py = pytest.importorskip("h5py")
    gen = np.random.default_rng(6)
    splits = {name: gen.normal(size=(n, 63)) for name, n in (("train", 30), ("validation", 5), ("test", 7))}
    with h5py.File(_place(tmp_path, "BSDS300/BSDS300.hdf5"), "w") as f:
        for name, x in splits.items():
            f[name] = x.astype(np.float32)
    data = load_dataset("bsds300", tmp_path)
    for split, name in zip((data.train, data.valid, data.test), splits):
        _close(split, splits[name])


def test_bsds300_without_h5py_says_what_to_install(tmp_path, monkeypatch):
    _place(tmp_path, "BSDS300/BSDS300.hdf5").write_bytes(b"\x89HDF\r\n\x1a\n")
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py raises ImportError
    with pytest.raises(DataError, match=r"needs h5py, which is not installed: install h5py"):
        load_dataset("bsds300", tmp_path)


def test_fetch_refuses_them_saying_no_checksums_are_on_record_and_how_to_place_them(tmp_path):
    for name in uci.SETS:
        assert not DATASETS[name].fetchable and all(f.relpath.startswith("maf/") for f in DATASETS[name].files)
    with pytest.raises(DataError, match=r"'hepmass' cannot be downloaded by pyro-vae: no checksums.*"
                                        r"zenodo\.org/record/1161203.*--data-dir"):
        fetch(["hepmass"], tmp_path)
    with pytest.raises(DataError, match=r"maf/power/data\.npy.*zenodo"):
        load_dataset("power", tmp_path)


def test_a_flow_trains_on_standardised_values_with_the_family_defaults(tmp_path):
    np.save(_place(tmp_path, "miniboone/data.npy"), np.random.default_rng(7).normal(size=(300, 43)))
    config = Config.from_dict({
        "data": {"name": "miniboone", "data_dir": str(tmp_path), "batch_size": 50},
        "model": {"name": "maf", "num_flows": 1, "hidden": [48]},
        "budget": {"epochs": 1}, "eval": {"plots": False},
    })
    exp, state = train(config, tmp_path / "run", progress=False)
    assert np.isfinite(state.history[-1]["valid_log_likelihood"])
