"""Convert pickled checkpoints (task_vectors' ``zeroshot.pt`` / ``finetuned.pt``) to safetensors, once.

The task_vectors checkpoints are whole pickled ``ImageEncoder`` modules, which ``torch.load(weights_only=True)``
refuses. This converter first tries ``torch.load(weights_only=True)`` (plain state dicts, zip or legacy format);
otherwise it unpickles every record of the file (the legacy format's header records too) with a restricted
unpickler: tensor rebuilding and a few builtins are allowed; every other class or function named by the pickle
is replaced by an inert stub that only records its state, so no code from the file runs. The modules'
parameters and persistent buffers are then read from the stubs' recorded state and written as
``<name>.safetensors`` beside the pickle (or under ``--out``).

    devec-convert ~/checkpoints/task_vectors/ViT-B-32     # or: python -m devec.vectors.convert ...
    # then: devec experiment=table1_multitask scale=paper pool=vision/task_vectors pool.root=~/checkpoints/...
"""

from __future__ import annotations

import argparse
import collections
import pickle
import sys
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from devec import io
from devec.vectors.checkpoint import load_weights_only

ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "dict"): dict,
    ("builtins", "list"): list,
    ("builtins", "tuple"): tuple,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
}


class Stub:
    """Stands in for any class or function a pickle names: records arguments and state, runs nothing."""

    qualname = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.__dict__["_args"] = args

    def __call__(self, *args: Any, **kwargs: Any) -> Stub:
        return Stub(*args)

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
            state = {**(state[0] or {}), **state[1]}
        self.__dict__["_state"] = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.__dict__.setdefault("_items", {})[key] = value

    def append(self, value: Any) -> None:
        self.__dict__.setdefault("_items_list", []).append(value)

    def extend(self, values: Any) -> None:
        self.__dict__.setdefault("_items_list", []).extend(values)


def _stub_for(module: str, name: str) -> type:
    return type(name, (Stub,), {"qualname": f"{module}.{name}"})


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only tensor-rebuilding globals and plain containers; anything else becomes a :class:`Stub`."""

    def find_class(self, module: str, name: str) -> Any:
        module = {"__builtin__": "builtins", "copy_reg": "copyreg"}.get(module, module)  # protocol-2 names
        if (module, name) in ALLOWED:
            return ALLOWED[(module, name)]
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        return _stub_for(module, name)


def restricted_load(file: Any, **kwargs: Any) -> Any:
    """``pickle.load`` through :class:`RestrictedUnpickler`; torch calls it for the legacy format's header records."""
    return RestrictedUnpickler(file, **kwargs).load()


RESTRICTED = SimpleNamespace(Unpickler=RestrictedUnpickler, load=restricted_load, __name__="restricted_pickle")


def load_restricted(path: str | Path) -> Any:
    """``torch.load`` through :class:`RestrictedUnpickler` (storages are handled by torch itself)."""
    with warnings.catch_warnings():  # legacy module pickles carry source code torch cannot compare with a stub
        warnings.filterwarnings("ignore", message="Couldn't retrieve source code")
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=RESTRICTED)


def load_safely(path: Path) -> Any:
    """Weights-only first (state dicts), then the restricted unpickler (whole modules); never plain pickle."""
    try:
        return load_weights_only(path)
    except OSError:
        raise
    except Exception:  # noqa: BLE001 - refused or unreadable as weights only: try the restricted unpickler
        pass
    try:
        return load_restricted(path)
    except OSError:
        raise
    except Exception as err:  # noqa: BLE001 - any failure here means the file cannot be converted safely
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise ValueError(f"{path}: cannot be converted: it is neither a weights-only state dict nor a pickled "
                         f"module that loads without running code from the file; it may be corrupt or crafted "
                         f"({type(err).__name__}: {first})") from None


def module_tensors(obj: Any, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """Parameters and persistent buffers of a (stubbed) ``nn.Module`` tree, in ``state_dict`` naming."""
    if isinstance(obj, torch.Tensor):
        yield prefix.rstrip("."), obj
        return
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if isinstance(v, torch.Tensor | Mapping | Stub):
                yield from module_tensors(v, f"{prefix}{k}.")
        return
    if not isinstance(obj, Stub):
        return
    state = obj.__dict__.get("_state")
    if not isinstance(state, Mapping):
        return
    if "_parameters" in state or "_modules" in state:
        skip = set(state.get("_non_persistent_buffers_set") or ())
        for k, v in (state.get("_parameters") or {}).items():
            if v is not None:
                yield f"{prefix}{k}", v
        for k, v in (state.get("_buffers") or {}).items():
            if v is not None and k not in skip:
                yield f"{prefix}{k}", v
        for k, v in (state.get("_modules") or {}).items():
            if v is not None:
                yield from module_tensors(v, f"{prefix}{k}.")
    else:
        yield from module_tensors(dict(state), prefix)


def convert(src: Path, dst: Path) -> dict[str, Any]:
    """Convert one pickle to safetensors; returns a manifest entry."""
    obj = load_safely(src)
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    tensors: dict[str, torch.Tensor] = {}
    for name, t in module_tensors(obj):
        tensors[name] = t.detach().clone() if isinstance(t, torch.nn.Parameter) else t.clone()
    if not tensors:
        raise ValueError(f"{src}: found no tensors (neither a state dict nor a pickled nn.Module)")
    io.save_safetensors(dst, tensors, metadata={"converted_from": src.name})
    return {"source": str(src), "output": str(dst), "tensors": len(tensors), "sha256": io.sha256_file(dst)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="devec-convert", description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path, help="a .pt file or a directory searched recursively for .pt files")
    parser.add_argument("--out", type=Path, default=None, help="output root (default: beside each pickle)")
    parser.add_argument("--force", action="store_true", help="overwrite existing .safetensors files")
    args = parser.parse_args(argv)
    src = args.src.expanduser()
    files = [src] if src.is_file() else sorted(src.rglob("*.pt"))
    if not files:
        raise SystemExit(f"no .pt files under {src}")
    manifest, errors = [], []
    for f in files:
        rel = f.relative_to(src.parent if src.is_file() else src)
        dst = (args.out / rel if args.out else f).with_suffix(".safetensors")
        if dst.exists() and not args.force:
            print(f"skip {dst} (exists; --force to overwrite)")
            continue
        try:
            entry = convert(f, dst)
        except (ValueError, OSError) as err:
            errors.append(str(err))
            print(f"error: {err}", file=sys.stderr)
            continue
        manifest.append(entry)
        print(f"{f} -> {dst} ({entry['tensors']} tensors)")
    if manifest:
        io.write_json((args.out or (src if src.is_dir() else src.parent)) / "converted.json", manifest)
    if errors:
        raise SystemExit(f"{len(errors)} of {len(files)} file(s) not converted (see the errors above)")


if __name__ == "__main__":
    main()
