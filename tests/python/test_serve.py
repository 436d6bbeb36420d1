"""examples/serve: jitfuse models behind Ray Serve on this machine (loopback only). Two replicas
answer 8 concurrent clients exactly like a direct call of the same file; malformed requests get a
4xx saying why and the service stays up; a replica killed mid-run is replaced while answers stay
right; fp32, bf16 and int8 files serve alike. The whole module stops itself after DEADLINE_S.
"""
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import ray
import requests
import torch
from ray import serve

from harness import TOLERANCE, max_rel_err

SERVE_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "serve")
sys.path.insert(0, SERVE_DIR)
import app  # noqa: E402
import client  # noqa: E402
import prepare  # noqa: E402
import wire  # noqa: E402

DEADLINE_S = 420  # the module, Ray's start and stop included (about 90 s here)
CORES = 2         # what Ray may hand out: 2 replicas x 1 thread


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _expire(signum, frame):
    raise TimeoutError(f"test_serve ran past {DEADLINE_S} s")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return prepare.prepare(str(tmp_path_factory.mktemp("served")))


@pytest.fixture(scope="module")
def base_url():
    """Ray and Serve on loopback for this module; shut down whatever happens."""
    previous = signal.signal(signal.SIGALRM, _expire)
    signal.alarm(DEADLINE_S)
    port = _free_port()
    try:
        ray.init(num_cpus=CORES, include_dashboard=False, log_to_driver=False, namespace="jitfuse-test",
                 object_store_memory=128 * 2**20, runtime_env={"working_dir": os.path.abspath(SERVE_DIR)})
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        yield f"http://127.0.0.1:{port}"
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def fp32_url(base_url, models):
    """The fp32 file served by 2 replicas of 1 thread each."""
    return deploy(base_url, models["fp32"], "fp32", replicas=2, threads=1)


def deploy(base_url, path, name, replicas, threads, **args):
    """Runs app.build's application as `name` at /name and returns its URL."""
    application = app.build({"model": path, "replicas": str(replicas), "threads": str(threads),
                             "cores": str(CORES), "health_check_s": "1", "batch_wait_ms": "5", **args})
    serve.run(application, name=name, route_prefix=f"/{name}")
    return f"{base_url}/{name}"


def agreement(model_path, inputs, dtype):
    """A direct call's answer to each input, and the check a served answer must pass: bitwise
    equality where the model computes a sample the same in any batch on this CPU (the server
    batches requests as they come); otherwise the README's tolerance for the dtype."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a replica
    try:  # one load of the file: each input alone, then the first 8 as one batch
        *alone, together = client.direct_outputs(
            model_path, [x.unsqueeze(0) for x in inputs] + [torch.stack(inputs[:8])], dtype)
    finally:
        torch.set_num_threads(threads)
    expected = [e[0] for e in alone]
    if all(torch.equal(together[i], expected[i]) for i in range(8)):
        return expected, torch.equal
    tol = TOLERANCE[expected[0].dtype]
    return expected, lambda got, ref: max_rel_err(got, ref) <= tol


def replica_pids(url, count, timeout_s=60):
    """The pids of `count` distinct replicas that answer GET at url."""
    pids, stop = set(), time.monotonic() + timeout_s
    while len(pids) < count and time.monotonic() < stop:
        pids.add(client.describe(url)["pid"])
    assert len(pids) == count, f"found replicas {pids}, wanted {count}"
    return pids


def test_ray_is_an_extra_not_a_dependency():
    import importlib.metadata
    ray_requirements = [r for r in importlib.metadata.requires("jitfuse") if r.startswith("ray")]
    assert ray_requirements == ['ray[serve]==2.60.0; extra == "serve"'], ray_requirements
    out = subprocess.run([sys.executable, "-c", "import sys, jitfuse; print('ray' in sys.modules)"],
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


def test_build_checks_its_arguments(models):
    with pytest.raises(ValueError, match="replicas x threads must be at most the cores"):
        app.build({"model": models["fp32"], "replicas": "2", "threads": "2", "cores": "2"})
    with pytest.raises(ValueError, match="model=PATH is required"):
        app.build({"replicas": "2"})
    with pytest.raises(ValueError, match="not found"):
        app.build({"model": "/nonexistent/model.pt"})
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['replica'\]"):
        app.build({"model": models["fp32"], "replica": "2"})
    with pytest.raises(ValueError, match="is not a TorchScript file"):
        app.build({"model": __file__})


def test_two_replicas_answer_like_a_direct_call(fp32_url, models):
    url = fp32_url
    info = client.describe(url)
    assert info["threads"] == 1 and info["input_shape"] == [3, 64, 64]
    inputs = client.make_inputs(info, 300)
    expected, agrees = agreement(models["fp32"], inputs, torch.float32)
    raw, _ = client.send(url, inputs[:240], clients=8, fmt="raw")
    as_json, _ = client.send(url, inputs[240:], clients=8, fmt="json")
    answers = raw + [dataclasses.replace(a, index=a.index + 240) for a in as_json]
    assert [a.status for a in answers] == [200] * 300, [a.error for a in answers if a.status != 200][:3]
    wrong = [a.index for a in answers if not agrees(a.output, expected[a.index])]
    assert not wrong, f"answers {wrong[:10]} differ from a direct call"
    assert len({a.replica for a in answers}) == 2, "both replicas should have answered"
    assert max(a.batch_requests for a in answers) > 1, "8 clients should have shared model calls"
    # Many samples in one request come back in their order.
    several = torch.stack(inputs[:5])
    status, out, err, _ = client.post(requests.Session(), url, several, "raw")
    assert status == 200, err
    assert all(agrees(out[i], expected[i]) for i in range(5))


MALFORMED = {
    # name: (content type, body, extra headers, status, what the message says)
    "json-truncated": ("application/json", b'{"inputs": [1, 2', {}, 400, "the body is not JSON"),
    "json-no-inputs": ("application/json", b'{"input": [1, 2]}', {}, 400, 'an object with an "inputs" field'),
    "json-ragged": ("application/json", b'{"inputs": [[1, 2], [3]]}', {}, 400, "rectangular nested list of numbers"),
    "json-wrong-shape": ("application/json", b'{"inputs": [1, 2]}', {}, 400, "one sample of shape [3, 64, 64]"),
    "json-strings": ("application/json", b'{"inputs": ["a"]}', {}, 400, "rectangular nested list of numbers"),
    "raw-short-body": (wire.RAW_TYPE, b"abc", {"X-Shape": "3,64,64"}, 400, "the body has 3 bytes"),
    "raw-no-shape": (wire.RAW_TYPE, b"abc", {}, 400, "needs an X-Shape header"),
    "raw-bad-shape": (wire.RAW_TYPE, b"abc", {"X-Shape": "3,x"}, 400, "not comma-separated integers"),
    "raw-float64": (wire.RAW_TYPE, b"abcd", {"X-Shape": "1", "X-Dtype": "float64"}, 400, "X-Dtype 'float64' is not one of"),
    "raw-no-samples": (wire.RAW_TYPE, b"", {"X-Shape": "0,3,64,64"}, 400, "1 to 64 of them"),
    "text-plain": ("text/plain", b"hello", {}, 415, "send application/json or application/octet-stream"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_requests_get_4xx_and_the_service_stays_up(fp32_url, case):
    content_type, body, headers, status, message = MALFORMED[case]
    url = fp32_url
    r = requests.post(url, data=body, headers={"Content-Type": content_type, **headers}, timeout=30)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]
    x = client.make_inputs(client.describe(url), 1)[0]
    assert client.post(requests.Session(), url, x, "raw")[0] == 200


def test_too_many_samples_and_other_methods_are_refused(fp32_url):
    url = fp32_url
    status, _, err, _ = client.post(requests.Session(), url, torch.zeros(65, 3, 64, 64), "raw")
    assert status == 400 and "1 to 64 of them" in err
    r = requests.delete(url, timeout=30)
    assert r.status_code == 405 and "POST a tensor" in r.json()["error"]


def test_a_killed_replica_is_replaced_and_answers_stay_right(fp32_url, models):
    url = fp32_url
    before = replica_pids(url, 2)
    info = client.describe(url)
    inputs = client.make_inputs(info, 400, seed=7)
    expected, agrees = agreement(models["fp32"], inputs, torch.float32)
    answered = []
    victim = min(before)

    def kill_after_100():
        while len(answered) < 100:
            time.sleep(0.005)
        os.kill(victim, signal.SIGKILL)  # a crash: no shutdown, requests in flight lost

    killer = threading.Thread(target=kill_after_100, daemon=True)
    killer.start()
    # Serve's proxy answers a request whose replica died under it with a 500 (it cannot know
    # whether the request had effects); inference is idempotent, so the client sends it again.
    answers, _ = client.send(url, inputs, clients=8, fmt="raw", retries=2, timeout=60, on_answer=answered.append)
    killer.join(timeout=30)
    retried = [a.retried_after for a in answers if a.retried_after]
    print(f"replica {victim} killed after 100 answers: {len(retried)} of {len(answers)} requests retried", retried[:2])
    assert all((status >= 500 or status == 0) and err.strip() for tries in retried for status, err in tries), retried
    assert [a.status for a in answers] == [200] * len(answers), [a.error for a in answers if a.status != 200][:3]
    wrong = [a.index for a in answers if not agrees(a.output, expected[a.index])]
    assert not wrong, f"answers {wrong[:10]} differ from a direct call"
    # Serve notices the dead replica (health_check_s=1) and starts another.
    deadline = time.monotonic() + 90
    while True:
        pids = {client.describe(url)["pid"] for _ in range(12)}
        if len(pids) == 2 and victim not in pids:
            break
        assert time.monotonic() < deadline, f"replica {victim} not replaced: {pids}"
        time.sleep(0.5)
    again, _ = client.send(url, inputs[:50], clients=8, fmt="raw")
    assert all(a.status == 200 and agrees(a.output, expected[a.index]) for a in again)


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_bf16_and_int8_files_serve_their_direct_answers(base_url, models, precision, tmp_path):
    serve.delete("fp32")  # frees the 2 cores (the fp32 tests ran before: file order)
    if precision == "bf16":
        url = deploy(base_url, models[precision], precision, replicas=1, threads=1)
    else:  # a file without serve.json (any jitfuse.optimize'd file): the request format as arguments
        import jitfuse  # noqa: F401
        bare = str(tmp_path / "bare_int8.pt")
        torch.jit.save(torch.jit.load(models[precision]), bare)
        with pytest.raises(ValueError, match="has no serve.json .* give input_shape"):
            app.build({"model": bare, "cores": str(CORES)})
        url = deploy(base_url, bare, precision, replicas=1, threads=1, input_shape="3,64,64", input_dtype="float32")
    info = client.describe(url)
    dtype = wire.DTYPES[info["input_dtype"]]
    assert dtype == (torch.bfloat16 if precision == "bf16" else torch.float32)
    inputs = client.make_inputs(info, 60, seed=3)
    expected, agrees = agreement(models[precision], inputs, dtype)
    for fmt in ("raw", "json"):
        answers, _ = client.send(url, inputs, clients=8, fmt=fmt)
        assert [a.status for a in answers] == [200] * 60, [a.error for a in answers][:2]
        assert all(a.output.dtype == expected[a.index].dtype and agrees(a.output, expected[a.index])
                   for a in answers), fmt
    serve.delete(precision)
