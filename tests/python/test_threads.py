"""One fused module shared by threads, and the thread count changed between calls: every output
right (the primitive cache keys include the thread count; the weight cache is shared)."""
import threading

import torch

import jitfuse  # noqa: F401
from deploy_models import make_model
from harness import max_rel_err, node_kinds


def fused_module():
    model, x = make_model(), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        m = torch.jit.freeze(torch.jit.trace(model, x))
        for _ in range(3):
            m(x)
    assert "jitfuse::conv2d_sum_relu_" in node_kinds(m.graph_for(x))
    return model, m


def run_in_threads(worker, count):
    """worker(seed) in `count` threads at once, seeds 0..count-1; returns when all are done."""
    threads = [threading.Thread(target=worker, args=(s,)) for s in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_shared_module_across_threads():
    model, m = fused_module()
    errors = []

    def worker(seed):
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for i in range(40):
                n, hw = 1 + (i + seed) % 3, 8 + 4 * ((i * 7 + seed) % 5)
                x = torch.randn(n, 3, hw, hw, generator=g)
                err = max_rel_err(m(x), model(x))
                if not err <= 1e-5:
                    errors.append((seed, i, err))

    run_in_threads(worker, 4)
    assert not errors, errors[:5]


def test_thread_count_changes_between_calls():
    model, m = fused_module()
    before = torch.get_num_threads()
    try:
        with torch.no_grad():
            for threads in [1, 2, 1, 2]:
                torch.set_num_threads(threads)
                x = torch.randn(2, 3, 20, 20)
                assert max_rel_err(m(x), model(x)) <= 1e-5
    finally:
        torch.set_num_threads(before)


def test_four_threads_a_thousand_calls_each_fp32_and_int8():
    """The issue's figure: one fused module shared by 4 threads, 1000 calls each with different
    inputs (16 shapes and values, expected outputs computed beforehand), for an fp32 and an int8
    module. Every output right: fp32 to 1e-5 of eager, int8 equal to the single-threaded call."""
    from deploy_models import int8_model
    model, fp32 = fused_module()
    torch.manual_seed(0)
    inputs = [torch.randn(1 + i % 2, 3, 8 + 4 * (i % 4), 8 + 4 * (i % 4)) for i in range(16)]
    qmodel = int8_model(model, inputs[0])
    with torch.no_grad():
        for x in inputs[:3]:
            qmodel(x)
        assert "jitfuse::qconv2d_sum_relu_" in node_kinds(qmodel.graph_for(inputs[0]))
        expected = {"fp32": [model(x) for x in inputs], "int8": [qmodel(x) for x in inputs]}
    modules = {"fp32": fp32, "int8": qmodel}
    errors, calls = [], [0]

    def worker(seed):
        with torch.no_grad():
            for i in range(1000):
                k = (i * 7 + seed) % len(inputs)
                for name, m in modules.items():
                    got = m(inputs[k])
                    ok = max_rel_err(got, expected[name][k]) <= 1e-5 if name == "fp32" else torch.equal(got, expected[name][k])
                    if not ok:
                        errors.append((name, seed, i))
                calls[0] += 1

    run_in_threads(worker, 4)
    assert not errors, errors[:5]
    assert calls[0] == 4000


def test_own_kernels_use_every_thread():
    """at::parallel_for only spreads work under -fopenmp: a build without it runs jitfuse's own
    kernels (row quantization, add+LayerNorm, Winograd transforms) on one thread."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert torch.ops.jitfuse._parallel_for_threads(64) == 2
        torch.set_num_threads(1)
        assert torch.ops.jitfuse._parallel_for_threads(64) == 1
    finally:
        torch.set_num_threads(before)
