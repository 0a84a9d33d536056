# Which SDPA backend costs what on this GPU (run on the device machine with python3's torch):
# masked attention over changing sequence lengths (dynamic padding), and the fixed causal shapes
# of tools/bench train, with torch's default backend order and without cuDNN attention.
import time
import torch
from torch.nn.attention import sdpa_kernel, SDPBackend

dev = "cuda"
ALL = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
NO_CUDNN = ALL[1:]


def step(backends, B, H, Hkv, L, D, mask, drop, causal=False):
    q = torch.randn(B, H, L, D, device=dev, dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(B, Hkv, L, D, device=dev, dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(B, Hkv, L, D, device=dev, dtype=torch.bfloat16, requires_grad=True)
    m = None
    if mask:
        m = torch.ones(B, 1, L, L, dtype=torch.bool, device=dev)
        m[:, :, :, L - 3:] = False
    with sdpa_kernel(backends):
        o = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=m, dropout_p=drop, is_causal=causal,
                                                             enable_gqa=H != Hkv)
    o.sum().backward()


def timed(fn, reps):
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / reps * 1e3


print("torch", torch.__version__, torch.cuda.get_device_name())
for name, bk in [("default", ALL), ("no-cudnn", NO_CUDNN)]:
    ts = [timed(lambda: step(bk, 32, 2, 2, L, 32, True, 0.1), 1) for L in range(20, 36)]
    print(f"{name:9s} masked, 16 new lengths: mean {sum(ts) / len(ts):8.2f} ms per fwd+bwd")
    for label, shape in [("GPT-2 causal 8x12x1024x64", (8, 12, 12, 1024, 64)), ("Qwen3 causal 4x16/8x1024x128", (4, 16, 8, 1024, 128))]:
        B, H, Hkv, L, D = shape
        timed(lambda: step(bk, B, H, Hkv, L, D, False, 0.0, True), 3)
        print(f"{name:9s} {label}: {timed(lambda: step(bk, B, H, Hkv, L, D, False, 0.0, True), 20):8.3f} ms per fwd+bwd")
