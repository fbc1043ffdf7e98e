"""A real `tritonserver` on 127.0.0.1 for tests and benchmarks, from the nvidia-pytriton wheel.

That build has only the python backend, so the production repository written by `tools.export` is
turned into a python-backend twin: same model name, inputs, outputs, dynamic batching and
parameters (the config is generated from the production one), with `model.py` running the same
ONNX graph in ONNX Runtime.

How the wheel's server runs (what pytriton itself does, `pytriton/triton.py`): the python backend
needs its stub binary for this interpreter's version inside the backend directory, the stub links
libpython (found through LD_LIBRARY_PATH = this interpreter's LIBDIR) and starts an embedded
interpreter that finds this virtualenv through `python3` on PATH, so `model.py` can import numpy
and onnxruntime. The server runs in its own process group, which teardown kills for sure.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tools.export.repository import (
    CONFIG_FILE,
    python_backend_variant,
    read_config,
    render_config,
)

PYTHON_MODEL_SOURCE = Path(__file__).with_name("triton_onnx_model.py")


def _pytriton_root() -> Path:
    import pytriton

    return Path(pytriton.__file__).resolve().parent


def tritonserver_binary() -> Path:
    return _pytriton_root() / "tritonserver" / "bin" / "tritonserver"


def prepare_backends(target: Path) -> Path:
    """A backend directory holding the python backend plus the stub for this interpreter."""
    source = _pytriton_root() / "tritonserver" / "backends" / "python"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = (
        _pytriton_root()
        / "tritonserver"
        / "python_backend_stubs"
        / version
        / "triton_python_backend_stub"
    )
    python_dir = target / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        shutil.copy2(source / name, python_dir / name)
    shutil.copy2(stub, python_dir / "triton_python_backend_stub")
    return target


def server_environment() -> dict[str, str]:
    env = dict(os.environ)
    libs = [
        str(sysconfig.get_config_var("LIBDIR")),
        str(_pytriton_root().parent / "nvidia_pytriton.libs"),
    ]
    if env.get("LD_LIBRARY_PATH"):
        libs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = ":".join(libs)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    # One ONNX Runtime thread per stub: the test machine is small and shared.
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_python_backend_repository(
    production_repository: Path, model_name: str, target: Path, control_file: Path
) -> Path:
    """Mirror one production model as a python-backend model under `target`."""
    production_root = production_repository / model_name
    config = python_backend_variant(
        read_config(production_root), extra_parameters={"control_file": str(control_file)}
    )
    model_root = target / model_name
    model_root.mkdir(parents=True, exist_ok=True)
    (model_root / CONFIG_FILE).write_text(render_config(config))
    for version_dir in production_root.iterdir():
        if version_dir.is_dir() and version_dir.name.isdigit():
            destination = model_root / version_dir.name
            destination.mkdir(exist_ok=True)
            shutil.copyfile(version_dir / "model.onnx", destination / "model.onnx")
            shutil.copyfile(PYTHON_MODEL_SOURCE, destination / "model.py")
    return target


@dataclass
class ServerControl:
    """Writes the knobs `triton_onnx_model.py` reads on every batch."""

    path: Path

    def set(self, *, delay_s: float = 0.0, kill_server_after_batches: int | None = None) -> None:
        staged = self.path.with_suffix(".tmp")
        staged.write_text(
            json.dumps({"delay_s": delay_s, "kill_server_after_batches": kill_server_after_batches})
        )
        staged.replace(self.path)

    def reset(self) -> None:
        self.set()


class TritonServer:
    """One tritonserver process group on 127.0.0.1 with explicit model control."""

    def __init__(self, repository: Path, workdir: Path, models: Sequence[str]) -> None:
        self.repository = repository
        self.workdir = workdir
        self.models = list(models)
        self.http_port = free_port()
        self.grpc_port = free_port()
        self.log_path = workdir / "tritonserver.log"
        self.process: subprocess.Popen[bytes] | None = None
        # The python backend's shared-memory regions outlive a SIGKILLed server; a unique
        # prefix lets teardown remove exactly ours.
        self.shm_prefix = f"asrtest{os.getpid()}x{self.grpc_port}x"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    def start(self, timeout_s: float = 60.0) -> None:
        backends = prepare_backends(self.workdir / "backends")
        command = [
            str(tritonserver_binary()),
            f"--model-repository={self.repository}",
            f"--backend-directory={backends}",
            "--model-control-mode=explicit",
            *(f"--load-model={name}" for name in self.models),
            "--http-address=127.0.0.1",
            f"--http-port={self.http_port}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={self.grpc_port}",
            "--allow-metrics=false",
            "--exit-timeout-secs=2",
            "--log-verbose=0",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
        ]
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                command,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=server_environment(),
                cwd=self.workdir,
                start_new_session=True,
            )
        self.wait_ready(timeout_s)

    def wait_ready(self, timeout_s: float) -> None:
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + timeout_s
        url = f"http://{self.http_url}/v2/health/ready"
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"tritonserver exited early:\n{self.logs()}")
            try:
                with urllib.request.urlopen(url, timeout=1.0) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.1)  # not listening yet: poll again
                continue
            time.sleep(0.1)
        raise TimeoutError(f"tritonserver not ready after {timeout_s}s:\n{self.logs()}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group (server and python stubs): a crash, not a shutdown."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):  # already gone (e.g. killed by a test)
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        for region in Path("/dev/shm").glob(f"{self.shm_prefix}*"):
            region.unlink(missing_ok=True)

    def stop(self, grace_s: float = 8.0) -> None:
        """Graceful stop (SIGTERM: Triton drains for --exit-timeout-secs), then SIGKILL."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):  # escalated just below
                self.process.wait(timeout=grace_s)
        self.kill()


def exported_repository(model_dir: Path, root: Path, model_name: str) -> Path:
    """The production repository (`tools.export`'s writer) for `model_dir`, made once per root."""
    from asr_assets.inference.onnx import export_onnx
    from tools.export.repository import TritonModelSettings, write_model_repository

    marker = root / ".complete"
    if not marker.exists():
        root.mkdir(parents=True, exist_ok=True)
        spec = export_onnx(model_dir, root / ".export" / "model.onnx")
        write_model_repository(spec, root, TritonModelSettings(model_name=model_name))
        shutil.rmtree(root / ".export")
        marker.touch()
    return root


@contextmanager
def running_server(
    production_repository: Path, model_name: str, workdir: Path
) -> Iterator[tuple[TritonServer, ServerControl]]:
    """A started server mirroring `model_name`, plus its control knobs; always torn down."""
    workdir.mkdir(parents=True, exist_ok=True)
    control = ServerControl(workdir / "control.json")
    control.reset()
    repository = write_python_backend_repository(
        production_repository, model_name, workdir / "repository", control.path
    )
    server = TritonServer(repository, workdir, [model_name])
    try:
        server.start()
        yield server, control
    finally:
        server.kill()
