"""A long log-likelihood evaluation that survives interruption.

Scoring 10000 test images with K = 5000 importance samples under the GAE's exact
50000-component prior takes hours on a CPU. :func:`checkpointed_log_likelihood` scores
the data in fixed chunks of points, writes each chunk's per-point estimates atomically
to a directory as soon as it is done, and on a later call skips the chunks already
there. Each chunk draws its samples from its own seed, so the result is the same
tensor whether the evaluation ran in one go or was interrupted and resumed any number
of times. Each chunk also keeps the seconds it took, so :func:`evaluation_seconds` gives
the cost of the whole evaluation, not only of the last call.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from time import perf_counter

import pyro
import torch
from torch import nn

from pyro_vae import checkpoint
from pyro_vae.errors import EvaluationError
from pyro_vae.evaluation.marginal_likelihood import LogLikelihood, log_likelihood

_SETTINGS = "settings.json"


def checkpointed_log_likelihood(module, data: torch.Tensor, directory: str | Path, num_samples: int = 5000,
                                chunk_size: int = 100, seed: int = 0, progress: bool = False,
                                allow_pickle: bool = False) -> LogLikelihood:
    """:func:`~pyro_vae.evaluation.log_likelihood` of every row of ``data``, chunk by chunk.

    Args:
        module: a package model (anything :func:`~pyro_vae.evaluation.log_likelihood` takes).
        data: ``(n, D)`` points to score.
        directory: where the finished chunks are kept (``chunk-<start>.pt``) with the
            settings they were made under; created if missing.
        num_samples: K, importance samples per point.
        chunk_size: points per saved chunk: the work an interruption can lose.
        seed: chunk ``c`` draws from ``pyro.set_rng_seed(seed + c)``.
        progress: print one line per finished chunk.
        allow_pickle: read saved chunks with the full unpickler, which executes any code
            they carry (only for a directory from a source you trust); off, they load as
            data only and a chunk holding anything else is refused.

    Raises:
        EvaluationError: (a ValueError) ``directory`` holds chunks made with other
            settings, other data or (for an ``nn.Module``) other parameter values, e.g. of
            a run trained on since: mixing them would be a wrong estimate. The message
            says which differ. Or its settings.json is damaged, so that nothing in it can
            be trusted.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of points, got {chunk_size}")
    directory = Path(directory)
    parameters = _sha1(module.parameters()) if isinstance(module, nn.Module) else None
    _check_settings(directory, {"num_samples": num_samples, "chunk_size": chunk_size, "seed": seed,
                                "points": len(data), "data_sha1": _sha1([data]), "parameters_sha1": parameters})
    per_point = []
    for c, start in enumerate(range(0, len(data), chunk_size)):
        path = directory / f"chunk-{start:07d}.pt"
        if path.exists():
            per_point.append(_chunk(path, allow_pickle))
            continue
        pyro.set_rng_seed(seed + c)
        t0 = perf_counter()
        ll = log_likelihood(module, data[start : start + chunk_size], num_samples=num_samples)
        checkpoint.save({"per_point": ll.per_point, "seconds": perf_counter() - t0}, path)
        per_point.append(ll.per_point)
        if progress:
            print(f"{path}: {-ll.mean:.2f} nats over {ll.n} points", flush=True)
    return LogLikelihood.from_per_point(torch.cat(per_point), num_samples)


def evaluation_seconds(directory: str | Path) -> float | None:
    """Seconds spent scoring the chunks saved in ``directory``, over every call that made
    them; ``None`` when a chunk predates the timing (its cost is unknown) or none exists."""
    times = [checkpoint.load(path).get("seconds") for path in _saved_chunks(directory)]
    if not times or any(not isinstance(t, float) for t in times):
        return None
    return sum(times)


def saved_scores(directory: str | Path) -> tuple[dict, torch.Tensor] | None:
    """The settings of the evaluation saved in ``directory`` (among them ``data_sha1`` and
    ``num_samples``: two evaluations with the same ones scored the same points) and the
    per-point log-likelihoods of its chunks, in the data's order; ``None`` when no chunk
    is saved."""
    paths = _saved_chunks(directory)
    if not paths:
        return None
    return _read_settings(Path(directory) / _SETTINGS), torch.cat([_chunk(path, False) for path in paths])


def _saved_chunks(directory: str | Path) -> list[Path]:
    """The chunk files saved in ``directory``, in the data's order."""
    return sorted(Path(directory).glob("chunk-*.pt"))


def _chunk(path: Path, allow_pickle: bool) -> torch.Tensor:
    saved = checkpoint.load(path, allow_pickle=allow_pickle).get("per_point")
    if not isinstance(saved, torch.Tensor):
        raise checkpoint.CheckpointError(f"{path} is not a saved evaluation chunk (no per-point tensor): "
                                         f"delete it to score its points anew")
    return saved


def _sha1(tensors) -> str:
    h = hashlib.sha1()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())  # any dtype
    return h.hexdigest()[:16]


def _check_settings(directory: Path, settings: dict) -> None:
    path = directory / _SETTINGS
    if not path.exists():
        checkpoint.write_text(path, json.dumps(settings, indent=2))
        return
    saved = _read_settings(path)
    differ = {k: (saved.get(k), v) for k, v in settings.items() if saved.get(k) != v}
    if differ:
        what = ", ".join(f"{k} {old} there, {new} now" for k, (old, new) in differ.items())
        raise EvaluationError(f"{directory} holds an evaluation made with other settings ({what}): "
                         "use the same settings to resume it, or another directory (or delete it) to start afresh")


def _read_settings(path: Path) -> dict:
    """The settings a saved evaluation was made under; a damaged file (hand-edited, or
    written by something else) is refused, as its chunks cannot be matched to anything."""
    try:
        saved = json.loads(path.read_text())
    except ValueError as e:  # not JSON, or not even UTF-8 text
        saved = e
    if not isinstance(saved, dict):
        raise EvaluationError(f"{path} is damaged (not the JSON settings of an evaluation): delete the folder "
                              f"{path.parent} to start that evaluation afresh")
    return saved
