"""A Hugging Face model folder: config.json, then model.safetensors or the shards its index names."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

import numpy as np

from ..errors import CheckpointError
from .checks import short
from .safetensors import read_safetensors


def read_json(path: Path):
    """A JSON file's value; any file Python cannot parse (or parses badly) is a CheckpointError."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        reason = f"{e.msg} at line {e.lineno}"
    except UnicodeDecodeError:
        reason = "not UTF-8 text"
    except RecursionError:
        reason = "nested too deeply"
    except ValueError:  # Python refuses integers of more than 4300 digits
        reason = "a number too long to read"
    raise CheckpointError(f"{path} is not valid JSON ({reason}): download it again")


def read_config_json(directory: Path):
    path = directory / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{directory} has no config.json: is it a Hugging Face model directory?")
    return read_json(path)


def read_tensors(directory: Path) -> tuple[dict[str, np.ndarray], str]:
    """Every tensor of the folder's weight files (memory-mapped), and where they came from, for messages."""
    files = safetensors_files(directory)
    tensors: dict[str, np.ndarray] = {}
    for path in files:
        tensors.update(read_safetensors(path))
    origin = files[0].name + (f" (and {len(files) - 1} more shards)" if len(files) > 1 else "") + f" in {directory}"
    return tensors, origin


def safetensors_files(directory: Path) -> list[Path]:
    single = directory / "model.safetensors"
    if single.is_file():
        return [single]
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        shards = shard_names(read_json(index), index)
        missing = [s for s in shards if not (directory / s).is_file()]
        if missing:
            raise CheckpointError(f"{directory} lacks the shard {missing[0]} named in {index.name}")
        return [directory / s for s in shards]
    if any((directory / name).is_file() for name in ("pytorch_model.bin", "model.bin", "tf_model.h5")):
        raise CheckpointError(f"{directory} has only pickle/TensorFlow weights; llmx loads only model.safetensors "
                              "(never pickle files): convert it, or pick a repo that has safetensors")
    raise CheckpointError(f"{directory} has no model.safetensors: is it a Hugging Face model directory?")


def shard_names(index, path: Path) -> list[str]:
    """The shard files an index's weight_map names: relative paths inside the model folder, nothing else.

    Checked by the name alone (no `resolve()`): in the Hugging Face cache every file is a link out of the
    snapshot folder into blobs/, but a name that is absolute or climbs with `..` is never a shard."""
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(name, str) for name in weight_map.values()):
        raise CheckpointError(f"{path} has no valid weight_map (tensor name -> shard file): download it again")
    for name in weight_map.values():
        parts = PurePosixPath(name).parts
        if not parts or PurePosixPath(name).is_absolute() or ".." in parts or "\\" in name or "\0" in name:
            raise CheckpointError(f"{path} names the shard {short(name)}, which is not a file inside the model "
                                  "folder: llmx does not follow it; download the model again")
    return sorted(set(weight_map.values()))
