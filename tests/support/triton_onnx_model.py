"""Triton python-backend model that runs the exported ONNX graph with ONNX Runtime on the CPU.

Copied as `<model>/<version>/model.py` next to `model.onnx` by `tests/support/triton_server.py`,
because the tritonserver in the nvidia-pytriton wheel has only the python backend. Triton's
dynamic batcher hands `execute` every request of a merged batch; they are concatenated and run as
one batch, as the onnxruntime backend would.

Test knobs come from a JSON control file named by the `control_file` config parameter, re-read on
every batch: `delay_s` (a slow server) and `kill_server_after_batches` (the server process group
is SIGKILLed when that many batches were answered: Triton dies mid-partition, deterministically).
"""

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import onnxruntime
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        parameters = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        version_dir = Path(args["model_repository"]) / args["model_version"]
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(
            str(version_dir / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self.inputs = [tensor["name"] for tensor in config["input"]]
        self.outputs = [tensor["name"] for tensor in config["output"]]
        self.control_file = parameters.get("control_file")
        self.batches = 0

    def _control(self) -> dict:
        if not self.control_file or not os.path.exists(self.control_file):
            return {}
        return json.loads(Path(self.control_file).read_text() or "{}")

    def execute(self, requests: list) -> list:
        control = self._control()
        kill_after = control.get("kill_server_after_batches")
        if kill_after is not None and self.batches >= int(kill_after):
            os.killpg(os.getpgid(0), signal.SIGKILL)
        if control.get("delay_s"):
            time.sleep(float(control["delay_s"]))
        feeds = {
            name: np.concatenate(
                [pb_utils.get_input_tensor_by_name(r, name).as_numpy() for r in requests]
            )
            for name in self.inputs
        }
        results = self.session.run(self.outputs, feeds)
        responses = []
        start = 0
        for request in requests:
            rows = pb_utils.get_input_tensor_by_name(request, self.inputs[0]).as_numpy().shape[0]
            tensors = [
                pb_utils.Tensor(name, np.ascontiguousarray(value[start : start + rows]))
                for name, value in zip(self.outputs, results, strict=True)
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += rows
        self.batches += 1
        return responses
