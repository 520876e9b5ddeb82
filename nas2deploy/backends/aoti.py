"""AOTInductor: the loader (torch module -> ``model.pt2``), the runner and the backend.

A network is exported with ``torch.export`` at one batch and compiled ahead of time by
TorchInductor (``torch._inductor.aoti_compile_and_package``) into a package that runs without
the Python model code: from Python (``torch._inductor.aoti_load_package``) or from C++
(``torch::inductor::AOTIModelPackageLoader``). It is a deployment target for PyTorch users
without TensorRT, and the fused engine that can be checked on machines where TensorRT cannot be
installed.

What differs from TensorRT: Inductor fuses pointwise work into generated kernels (C++ with
OpenMP on a CPU, Triton on a GPU) but calls the vendor libraries (oneDNN / cuDNN, cuBLAS) for
convolutions, with no per-layer timing of alternative tactics; the package holds fp32 kernels
for exactly the shapes it was compiled for (one batch here, no dynamic batch); and it runs on
the CPU too. Compiling needs a C++ compiler on the machine that builds (and Triton for CUDA);
loading needs only torch.

A package is bound to where it was built: the torch version (the package's runtime ABI), the
device, the machine architecture, and the processor itself (Inductor compiles CPU kernels for
the building CPU's instruction set, and GPU kernels for its GPU). ``model.pt2.json`` beside it
records these, and a package built elsewhere is refused naming both, as TensorRT engines are.
"""

from __future__ import annotations

import copy
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas2deploy.backends.base import (
    INPUT_NAME,
    OUTPUT_NAME,
    Artifact,
    Backend,
    ModelFile,
    OnnxModel,
    Runner,
    TorchModule,
    cpu_name,
    refuse_other_platform,
)
from nas2deploy.backends.pytorch import require_cuda
from nas2deploy.backends.timing import time_on
from nas2deploy.errors import UserError, first_line
from nas2deploy.fileio import atomic_write_json, read_json, refuse_link

if TYPE_CHECKING:
    import numpy as np
    import torch

    from nas2deploy.backends.settings import BackendSettings

INFO_FORMAT = "nas2deploy.aoti_package"


def package_platform(device: str) -> dict[str, str]:
    """What a package is bound to (see the module docstring)."""
    import torch

    return {"torch": str(torch.__version__), "device": device, "machine": platform.machine(),
            "processor": torch.cuda.get_device_name() if device == "cuda" else cpu_name()}


def require_compiler() -> None:
    """Inductor writes C++ and compiles it with the machine's compiler (``CXX`` or c++/g++/clang++)."""
    if not (os.environ.get("CXX") or any(shutil.which(c) for c in ("c++", "g++", "clang++"))):
        raise UserError("--backend aoti compiles C++: no C++ compiler found (set CXX, or install g++ or clang++)")


def compile_package(module: torch.nn.Module, input_shape: tuple[int, ...], device: str, path: Path) -> float:
    """Export ``module`` at ``input_shape`` (batch included), compile it into the package at
    ``path`` and record its platform beside it; returns the compile seconds."""
    import torch

    require_compiler()
    if device == "cuda":
        require_cuda()
    refuse_link(path)
    start = time.perf_counter()
    module = copy.deepcopy(module).eval().to(device)  # the caller's module stays where it is
    example = torch.randn(*input_shape, device=device)
    fd, partial = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".pt2", dir=path.parent)
    os.close(fd)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.export's own deprecation notices
            program = torch.export.export(module, (example,))
            torch._inductor.aoti_compile_and_package(program, package_path=partial)
        os.replace(partial, path)  # the package appears whole, or not at all
    except Exception as exc:  # Inductor's and the compiler's errors are many-lined and of many types
        raise UserError(f"AOTInductor could not compile the network for {device} ({first_line(exc)})") from None
    finally:
        Path(partial).unlink(missing_ok=True)
    atomic_write_json(Path(f"{path}.json"), {"format": INFO_FORMAT, "version": 1, "input_shape": list(input_shape),
                                             **package_platform(device)})
    return time.perf_counter() - start


def package_info(path: Path, device: str) -> list[int]:
    """The input shape a package was compiled for, after refusing one built elsewhere."""
    info = Path(f"{path}.json")
    if not info.is_file():
        raise UserError(f"package {path}: its platform record {info.name} is missing; export it again with "
                        "nas2deploy export --backend aoti")
    doc = read_json(info, "package info")
    if not isinstance(doc, dict) or doc.get("format") != INFO_FORMAT:
        raise UserError(f"package info {info}: not a nas2deploy AOTInductor record; export the package again")
    refuse_other_platform(doc, package_platform(device), f"package {path}", "nas2deploy export --backend aoti")
    shape = doc.get("input_shape")
    if not (isinstance(shape, list) and len(shape) == 4 and all(type(d) is int and 1 <= d <= 16384 for d in shape)):
        raise UserError(f"package info {info}: input_shape must be four sizes in 1..16384; export the package again")
    return shape


#: Loads the package named by argv[1] in a child process (``check_loader``).
LOAD_PROBE = "import sys, torch; torch._inductor.aoti_load_package(sys.argv[1])"
#: Devices for which a package has loaded in a child process of this one.
_LOADER_WORKS: set[str] = set()


def check_loader(path: Path, device: str) -> None:
    """Load the package once in a child process before this process does, once per device: a
    torch build whose package loader crashes would otherwise kill the export, ``bench`` or
    profile with no message. Seen on an H200 machine with torch 2.11.0+cu130 (CUDA 13, driver
    580): every package, a CPU one of a single convolution too, segfaulted inside
    ``AOTIModelPackageLoader`` in a fresh process, while compiling worked. A crash becomes one
    line; an ordinary error is left to the load in this process, which names it."""
    if device in _LOADER_WORKS:
        return
    try:
        done = subprocess.run([sys.executable, "-c", LOAD_PROBE, str(path)], capture_output=True, timeout=600)
    except subprocess.TimeoutExpired:
        raise UserError(f"AOTInductor package {path}: loading it did not finish in 10 minutes; export it again") from None
    if done.returncode < 0:
        import torch

        name = signal.Signals(-done.returncode).name if -done.returncode in signal.valid_signals() else str(-done.returncode)
        raise UserError(f"torch {torch.__version__} crashed ({name}) loading AOTInductor package {path} in its package loader: "
                        "this torch build cannot load AOTInductor packages on this machine (seen with torch 2.11.0+cu130 on "
                        "an H200, for CPU packages too); use another torch build, or another --backend")
    _LOADER_WORKS.add(device)


class AOTIRunner(Runner):
    """Runs a compiled package on prepared device-resident inputs."""

    def __init__(self, path: Path, device: str, threads: int = 1):
        import torch

        if device == "cuda":
            require_cuda()
        else:
            torch.set_num_threads(threads)  # Inductor's CPU kernels run on torch's OpenMP threads
        self._shape = tuple(package_info(path, device))
        self.device = torch.device(device)
        check_loader(path, device)
        try:
            self._model = torch._inductor.aoti_load_package(str(path))
        except Exception as exc:
            raise UserError(f"AOTInductor cannot load {path} ({first_line(exc)}); export it again") from None
        self._input = torch.randn(*self._shape, device=self.device)
        self._stream = torch.cuda.Stream() if device == "cuda" else None

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        return {INPUT_NAME: self._shape}

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import numpy as np
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(feeds[INPUT_NAME])).to(self.device, torch.float32)
            return {OUTPUT_NAME: self._model(x).float().cpu().numpy()}

    def _run(self) -> None:
        self._model(self._input)

    def time_runs(self, n: int) -> list[float]:
        import torch

        with torch.inference_mode():
            return time_on(self._run, n, self._stream)


class AOTIBackend(Backend):
    name = "aoti"
    precisions = ("fp32",)
    suffixes = (".pt2",)
    independent_of_torch = True  # Inductor's generated kernels, checked against eager PyTorch
    dynamic_batch = False

    def check_available(self, settings: BackendSettings) -> None:
        """Part of torch; compiling also needs a C++ compiler (checked where a package is built)."""

    def version(self) -> str:
        import torch

        return str(torch.__version__)

    def open(self, settings: BackendSettings, artifact: Artifact) -> Runner:
        if isinstance(artifact, ModelFile):
            if artifact.path.suffix != ".pt2":
                raise UserError(f"{artifact.source}: --backend aoti runs .pt2 packages (nas2deploy export --backend aoti)")
            return AOTIRunner(artifact.path, settings.device, settings.threads)
        if isinstance(artifact, TorchModule):  # compiled for this run only (a profile or a check)
            folder = Path(tempfile.mkdtemp(prefix="nas2deploy-aoti-"))
            try:
                path = folder / "model.pt2"
                compile_package(artifact.module, (settings.batch, *artifact.input_shape), settings.device, path)
                return AOTIRunner(path, settings.device, settings.threads)  # loaded into memory: the files can go
            finally:
                shutil.rmtree(folder, ignore_errors=True)
        raise UserError(f"{artifact.source}: --backend aoti compiles PyTorch modules or runs .pt2 packages")

    def deploy(self, settings: BackendSettings, artifact: TorchModule, out: Path,
               batch_range: tuple[int, int, int] | None = None,
               quantized: OnnxModel | None = None) -> tuple[Artifact, dict[str, Any]]:
        """``model.pt2`` (and its platform, ``model.pt2.json``), compiled for the export's batch."""
        import torch

        assert batch_range is None, "export refuses --dynamic-batch for this backend before any work"
        seconds = compile_package(artifact.module, (settings.batch, *artifact.input_shape), settings.device, out / "model.pt2")
        return ModelFile(out / "model.pt2"), {
            "file": "model.pt2", "device": settings.device, "batch": settings.batch, "compile_s": round(seconds, 1),
            "torch": str(torch.__version__),
            "what": f"AOTInductor package ({settings.device}, batch {settings.batch}, torch {torch.__version__}, compiled in "
                    f"{seconds:.0f} s); model.pt2.json: its platform"}
