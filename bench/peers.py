"""What a CPU user would deploy instead of jitfuse, outside PyTorch: OpenVINO (fp32, bf16 through
its precision hint, int8 through NNCF) and ONNX Runtime (fp32, int8). Each builder takes the
eager fp32 model, an example batch and the calibration batches the int8 variants share with
jitfuse's, and returns a callable on torch tensors. They need the package's [bench] extra
(`pip install 'jitfuse[bench]'`); `available()` says which are installed.
"""
import importlib.util
import os
import tempfile

import torch


def available():
    """The peers whose packages are installed: a subset of ("openvino", "ort")."""
    have = []
    if importlib.util.find_spec("openvino") and importlib.util.find_spec("nncf"):
        have.append("openvino")
    if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnx"):
        have.append("ort")
    return tuple(have)


def _numpy(inputs):
    return [t.numpy() for t in inputs]


class Peer:
    """A runtime's compiled model, called like the TorchScript variants (torch tensors in, the
    first output back as a torch tensor)."""

    def __init__(self, name, run):
        self.name, self._run = name, run

    def __call__(self, *inputs):
        return torch.from_numpy(self._run(_numpy(inputs)))


def openvino(model, inputs, precision, threads, calibration=None, transformer=False):
    """OpenVINO on its CPU plugin, one stream, latency hint: what `ov.convert_model` and
    `core.compile_model` give a user. precision "f32" or "bf16" (the inference precision hint);
    `calibration` (a list of input tuples) makes it int8 through NNCF's post-training
    quantization (its transformer preset for BERT)."""
    import openvino as ov
    ov_model = ov.convert_model(model, example_input=inputs if len(inputs) > 1 else inputs[0])
    name = f"openvino-{precision}"
    if calibration is not None:
        import nncf
        data = nncf.Dataset([tuple(_numpy(batch)) if len(batch) > 1 else batch[0].numpy() for batch in calibration])
        preset = {"model_type": nncf.ModelType.TRANSFORMER} if transformer else {}
        ov_model = nncf.quantize(ov_model, data, subset_size=len(calibration), **preset)
        name = "openvino-int8"
    compiled = ov.Core().compile_model(ov_model, "CPU", {
        "INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": threads,
        "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"})
    request = compiled.create_infer_request()

    def run(arrays):
        request.infer(dict(enumerate(arrays)), share_inputs=True)
        return request.get_output_tensor(0).data.copy()
    return Peer(name, run)


def _export_onnx(model, inputs, path):
    names = [f"input{i}" for i in range(len(inputs))]
    try:  # torch 2.13's exporter; the TorchScript one where it cannot take the model
        torch.onnx.export(model, inputs, path, input_names=names, dynamo=True, opset_version=18)
    except Exception:  # noqa: BLE001 - any exporter failure: try the other exporter
        torch.onnx.export(model, inputs, path, input_names=names, dynamo=False, opset_version=17)
    return names


def ort(model, inputs, threads, int8=None, calibration=None):
    """ONNX Runtime's CPU provider with every graph optimization. int8: "static" (QDQ, uint8
    activations calibrated on `calibration`, int8 weights per channel: its CNN recipe) or
    "dynamic" (its recipe for transformers)."""
    import onnxruntime as rt
    tmp = tempfile.mkdtemp(prefix="jitfuse-bench-")
    path = os.path.join(tmp, "model.onnx")
    names = _export_onnx(model, inputs, path)
    if int8 == "static":
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process

        class Batches(CalibrationDataReader):
            def __init__(self):
                self.left = [dict(zip(names, _numpy(b))) for b in calibration]

            def get_next(self):
                return self.left.pop() if self.left else None
        pre, out = os.path.join(tmp, "pre.onnx"), os.path.join(tmp, "int8.onnx")
        quant_pre_process(path, pre)
        quantize_static(pre, out, Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        path = out
    elif int8 == "dynamic":
        from onnxruntime.quantization import QuantType, quantize_dynamic
        out = os.path.join(tmp, "int8.onnx")
        quantize_dynamic(path, out, weight_type=QuantType.QInt8)
        path = out
    options = rt.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.graph_optimization_level = rt.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = rt.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return Peer("ort-int8" if int8 else "ort-fp32", lambda arrays: session.run(None, dict(zip(names, arrays)))[0])
