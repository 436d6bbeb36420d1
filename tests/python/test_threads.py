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

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
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
