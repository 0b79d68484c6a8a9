"""Models placed across devices and offloaded to disk, through the standard mechanism:
``transformers``' ``from_pretrained(device_map=..., max_memory=..., offload_folder=...)``, which
hands the placement to accelerate (no home-made sharding here).

accelerate places each module on a device (``cuda:N``, ``cpu``) or offloads it (``cpu`` / ``disk``
for a model whose execution device is a GPU; ``disk`` on a CPU-only machine): an offloaded
module's parameters are ``meta`` tensors between calls, and a hook loads them for the duration of
each call.  So everything that *calls* modules (forwards, hooks, caches, patching engines, the
lens) works unchanged; code that *reads* a parameter directly (per-head weights, the
unembedding) must hold it loaded first: :func:`onloaded`.

This module validates a placement request up front (:func:`request`, :func:`check_fits`: one
line for a device that does not exist, a malformed ``max_memory``, a budget that cannot hold even
one layer) and describes the placement a model got (:func:`summary`).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from interp.errors import InputError

#: device_map strategies transformers / accelerate understand
STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
#: placements accelerate offloads to (not execution devices)
OFFLOAD_TARGETS = ("disk",)


@dataclass(frozen=True)
class Placement:
    """A validated placement request: ``device_map`` (a strategy or ``{module path: device}``),
    ``max_memory`` (``{0: bytes, "cpu": bytes, ...}``, accelerate's keys), ``offload_folder``
    (where disk-offloaded weights live; a temporary folder, removed with the model, when not
    given) and whether that folder is temporary."""

    device_map: str | dict[str, str | int]
    max_memory: dict[int | str, int] | None = None
    offload_folder: str = ""
    temporary_folder: bool = False
    given: dict = field(default_factory=dict)  # what the user passed (for the model's card)

    def from_pretrained_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``from_pretrained`` that carry this placement."""
        out: dict[str, Any] = {"device_map": self.device_map, "offload_folder": self.offload_folder}
        if self.max_memory is not None:
            out["max_memory"] = dict(self.max_memory)
        return out


def available_devices() -> list[str]:
    """The devices this machine has: ``cpu`` and each CUDA device."""
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return ["cpu"] + [f"cuda:{i}" for i in range(n)]


def _device_key(key: Any, what: str) -> int | str:
    """A device named in ``max_memory`` / a device map, as accelerate keys it (an int for a GPU)."""
    if isinstance(key, bool):
        raise InputError(f"{what} names device {key!r}; use 'cpu', 'disk', a GPU index or 'cuda:N'")
    n_gpu = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if isinstance(key, torch.device):
        key = str(key)
    if isinstance(key, int) or (isinstance(key, str) and key.strip().isdigit()):
        index = int(key)
    elif isinstance(key, str) and key.strip().lower() in ("cpu", "disk"):
        return key.strip().lower()
    elif isinstance(key, str) and key.strip().lower().startswith("cuda"):
        rest = key.strip().lower()[4:]
        if rest in ("", ":"):
            index = 0
        elif rest.startswith(":") and rest[1:].isdigit():
            index = int(rest[1:])
        else:
            raise InputError(f"{what} names device {key!r}; use 'cpu', 'disk', a GPU index or 'cuda:N'")
    else:
        raise InputError(f"{what} names device {key!r}; use 'cpu', 'disk', a GPU index or 'cuda:N'")
    if not 0 <= index < n_gpu:
        raise InputError(
            f"{what} names GPU {index} (cuda:{index}), which this machine does not have; "
            f"its devices: {available_devices()} (and 'disk' for offloading)"
        )
    return index


def _size(value: Any, key: Any) -> int:
    from accelerate.utils import convert_file_size_to_int

    if isinstance(value, bool):
        raise InputError(f"max_memory[{key!r}] must be a size (bytes, or e.g. '500MB', '2GiB'), got {value!r}")
    try:
        size = convert_file_size_to_int(value if isinstance(value, int) else str(value).strip())
    except (ValueError, AttributeError, TypeError):
        size = -1
    if size <= 0:
        raise InputError(f"max_memory[{key!r}] must be a positive size (bytes, or e.g. '500MB', '2GiB'), got {value!r}")
    return int(size)


def parse_max_memory(max_memory: Mapping | None) -> dict[int | str, int] | None:
    """``max_memory`` with accelerate's keys (GPU index, ``cpu``, ``disk``) and sizes in bytes;
    raises naming the first bad entry."""
    if max_memory is None:
        return None
    if not isinstance(max_memory, Mapping) or not max_memory:
        raise InputError(
            "max_memory must be a non-empty dict {device: size}, e.g. {'cpu': '2GB'} or {0: '10GiB', 'cpu': '30GiB'}"
        )
    out: dict[int | str, int] = {}
    for key, value in max_memory.items():
        out[_device_key(key, "max_memory")] = _size(value, key)
    return out


def request(
    device_map: Any = None, max_memory: Mapping | None = None, offload_folder: Any = None, device: Any = None
) -> Placement | None:
    """A validated :class:`Placement`, or None when nothing asks for one.  ``max_memory`` or
    ``offload_folder`` alone imply ``device_map="auto"``.  ``device`` and ``device_map`` exclude
    each other (the map places every module itself)."""
    from pathlib import Path

    if device_map is None and max_memory is None and offload_folder is None:
        return None
    if device not in (None, "") and device_map is not None:
        raise InputError(
            f"give device= or device_map=, not both: device_map={device_map!r} places every module itself "
            "(put the whole model on one device with device= alone)"
        )
    if device_map is None:
        device_map = "auto"
    if isinstance(device_map, str):
        if device_map.strip() not in STRATEGIES:
            raise InputError(
                f"device_map must be one of {list(STRATEGIES)} or a dict {{module path: device}}, got {device_map!r}"
            )
        dmap: str | dict[str, str | int] = device_map.strip()
    elif isinstance(device_map, Mapping) and device_map:
        dmap = {}
        for path, dev in device_map.items():
            if not isinstance(path, str):
                raise InputError(f"device_map keys are module paths (str), got {path!r}")
            key = _device_key(dev, f"device_map[{path!r}]")
            dmap[path] = key if isinstance(key, int) else key
    else:
        raise InputError(
            f"device_map must be one of {list(STRATEGIES)} or a non-empty dict {{module path: device}}, "
            f"got {type(device_map).__name__}"
        )
    memory = parse_max_memory(max_memory)
    temporary = offload_folder in (None, "")
    if temporary:
        folder = tempfile.mkdtemp(prefix="interp-offload-")
    else:
        path = Path(str(offload_folder)).expanduser()
        if path.exists() and not path.is_dir():
            raise InputError(f"offload_folder {str(path)!r} exists and is not a folder")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"cannot create offload_folder {str(path)!r}: {e.strerror or e}") from None
        folder = str(path)
    given: dict[str, Any] = {"device_map": dmap}
    if max_memory is not None:
        given["max_memory"] = {str(k): v for k, v in max_memory.items()}
    if not temporary:
        given["offload_folder"] = folder
    return Placement(dmap, memory, folder, temporary, given)


def _meta_model(config, trust_remote_code: bool = False) -> nn.Module:
    """The model of ``config`` without any memory (parameters on ``meta``), to read its shapes."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    with init_empty_weights():
        return AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)


def largest_layer(model: nn.Module, dtype: torch.dtype) -> tuple[str, int]:
    """``(name, bytes)`` of the largest module accelerate never splits across devices (a decoder
    layer: the model's ``_no_split_modules``, else the leaf modules) in ``dtype``."""
    from accelerate.utils import compute_module_sizes, get_max_layer_size

    no_split = list(getattr(model, "_no_split_modules", None) or [])
    sizes = compute_module_sizes(model, dtype=dtype)
    size, names = get_max_layer_size(list(model.named_children()), sizes, no_split)
    return (names[0] if names else "?"), int(size)


def check_fits(config, placement: Placement, dtype: torch.dtype, *, name: str, trust_remote_code: bool = False):
    """Refuses, up front, a placement no run could keep to: a ``max_memory`` whose devices cannot
    hold even the largest layer (an offloaded layer is loaded whole onto its execution device to
    run), and an explicit device map naming modules the model does not have."""
    meta = _meta_model(config, trust_remote_code)
    if isinstance(placement.device_map, dict):
        paths = {p for p, _ in meta.named_modules()}
        unknown = [p for p in placement.device_map if p and p not in paths]
        if unknown:
            tops = [p for p, _ in meta.named_modules() if p and p.count(".") <= 2][:12]
            raise InputError(
                f"device_map names modules {unknown} that {name} does not have; its modules include {tops}"
            )
    if placement.max_memory is None:
        return
    compute = {k: v for k, v in placement.max_memory.items() if k not in OFFLOAD_TARGETS}
    layer, need = largest_layer(meta, dtype)
    room = max(compute.values(), default=0)
    if room < need:
        where = ", ".join(
            f"{'cuda:' + str(k) if isinstance(k, int) else k} {v / 2**20:.3g} MB" for k, v in compute.items()
        )
        raise InputError(
            f"max_memory is too small for even one layer of {name}: its largest layer ({layer}) needs "
            f"{need / 2**20:.3g} MB in {str(dtype).replace('torch.', '')}, and an offloaded layer is loaded whole "
            f"onto a device to run, but max_memory gives {where or 'no execution device (only disk)'}; "
            f"give 'cpu' or a GPU at least {need / 2**20:.3g} MB"
        )


# --- a placed model ----------------------------------------------------------------------------


def hf_model(module: nn.Module) -> nn.Module | None:
    """The Hugging Face model inside a loaded model's module (a bridge's ``original_model``), if any."""
    if hasattr(module, "hf_device_map"):
        return module
    inner = getattr(module, "original_model", None)
    return inner if isinstance(inner, nn.Module) else None


def is_dispatched(module: nn.Module) -> bool:
    """Whether accelerate placed ``module`` (or the HF model inside it) with a device map."""
    inner = hf_model(module)
    return inner is not None and bool(getattr(inner, "hf_device_map", None))


def offloaded_modules(module: nn.Module) -> list[nn.Module]:
    """The submodules whose parameters accelerate keeps offloaded (``meta`` between calls)."""
    from accelerate.utils import has_offloaded_params

    # the module that holds the hook itself (wrappers such as TransformerLens's bridge components
    # forward attribute reads to the module they wrap, so they seem to have it too)
    return [m for m in module.modules() if "_hf_hook" in vars(m) and has_offloaded_params(m)]


@contextlib.contextmanager
def onloaded(*modules: nn.Module | None) -> Iterator[None]:
    """Inside the block, every offloaded parameter of ``modules`` (and their submodules) holds its
    values (loaded onto the module's execution device), so code may read parameters directly;
    they are offloaded again afterwards (tensors read inside stay valid).  A no-op for a model
    that is not offloaded.  Loads all of them at once: pass the modules whose weights are read."""
    found: list[nn.Module] = []
    seen: set[int] = set()
    for module in modules:
        if module is None:
            continue
        for m in offloaded_modules(module):
            if id(m) not in seen:
                seen.add(id(m))
                found.append(m)
    if not found:
        yield
        return
    from accelerate.utils import align_module_device

    with contextlib.ExitStack() as stack:
        for m in found:
            stack.enter_context(align_module_device(m))
        yield


def input_device(module: nn.Module) -> torch.device:
    """Where a placed model takes its inputs: the device of its first parameter that holds values,
    else (everything offloaded) the execution device of its first offloaded module."""
    for p in module.parameters():
        if p.device.type != "meta":
            return p.device
    for m in module.modules():
        hook = getattr(m, "_hf_hook", None)
        dev = getattr(hook, "execution_device", None)
        if dev is not None:
            return torch.device(dev if not isinstance(dev, int) else f"cuda:{dev}")
    return torch.device("cpu")


def summary(module: nn.Module) -> dict:
    """The placement a model got: ``device_map`` (module path -> device, as accelerate realised
    it), ``devices`` (execution devices used) and ``offloaded`` (module paths on disk / offloaded)."""
    inner = hf_model(module)
    dmap = dict(getattr(inner, "hf_device_map", None) or {})
    named = {p: (f"cuda:{v}" if isinstance(v, int) else str(v)) for p, v in dmap.items()}
    devices = sorted(set(named.values()) - {"disk", "meta"})
    # with a GPU to run on, accelerate offloads the modules it maps to "cpu" as well as "disk"
    gpu = any(d.startswith("cuda") for d in devices)
    off = [p for p, v in named.items() if v == "disk" or (gpu and v == "cpu")]
    return {
        "device_map": named,
        "devices": devices,
        "offloaded": off,
    }
