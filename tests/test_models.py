"""effattn.models: every model's forward/backward, features_only, window clamping, one-batch
overfitting, lightning LM generation against the parallel forward, the NATTEN converter,
torch.compile(fullgraph=True) on one NA block and one lightning block, state_dict round trips."""
import copy
import warnings

import pytest
import torch
from torch import nn

import effattn
from effattn.models import create_model, list_models
from effattn.models.layers import AdaptiveNeighborhoodAttention2D, NATLayer, effective_window
from effattn.models.lightning_lm import LightningBlock
from effattn.reference import na_reference

# name -> (kwargs, input shape); the full-size backbones at 64×64 (a forward+backward is < 1 s).
MODELS = {
    "nat_mini": (dict(), (2, 3, 32, 32)),
    "nat_tiny": (dict(num_classes=7), (1, 3, 64, 64)),
    "dinat_tiny": (dict(num_classes=7), (1, 3, 64, 64)),
    "na3d_video_mini": (dict(), (2, 3, 8, 32, 32)),
}


def _max_err(a, b):
    return (a - b).abs().max().item()


def test_list_models_and_bad_name():
    assert list_models() == ["dinat_tiny", "lightning_lm_mini", "na3d_video_mini", "nat_mini", "nat_tiny"]
    with pytest.raises(ValueError, match="unknown model 'nat_huge'.*available models: dinat_tiny, "
                                         "lightning_lm_mini, na3d_video_mini, nat_mini, nat_tiny"):
        create_model("nat_huge")
    assert effattn.models.create_model is create_model


@pytest.mark.parametrize("name", list(MODELS))
def test_image_and_video_models_forward_backward(name):
    kwargs, shape = MODELS[name]
    model = create_model(name, **kwargs)
    x = torch.randn(*shape, requires_grad=True)
    logits = model(x)
    assert logits.shape == (shape[0], kwargs.get("num_classes", 10))
    assert torch.isfinite(logits).all()
    logits.square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing


def test_lightning_lm_forward_backward():
    model = create_model("lightning_lm_mini")
    ids = torch.randint(0, 256, (2, 37))
    logits = model(ids)
    assert logits.shape == (2, 37, 256)
    nn.functional.cross_entropy(logits.flatten(0, 1), ids.flatten()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.lm_head.weight is model.embed.weight  # tied head


def test_nat_tiny_configs():
    nat, dinat = create_model("nat_tiny"), create_model("dinat_tiny")
    count = sum(p.numel() for p in nat.parameters())
    assert 27_000_000 < count < 29_000_000  # NAT-Tiny: 28M (its rpb tables are not included)
    assert count == sum(p.numel() for p in dinat.parameters())
    assert [len(level.blocks) for level in nat.levels] == [3, 4, 18, 5]
    assert [level.blocks[0].attn.num_heads for level in nat.levels] == [2, 4, 8, 16]
    assert nat.levels[2].blocks[0].mlp.fc1.out_features == 3 * 256
    dil = [[b.attn.dilation[0] for b in level.blocks] for level in dinat.levels]
    assert dil[0] == [1, 8, 1] and dil[1] == [1, 4, 1, 4] and dil[2][:4] == [1, 2, 1, 2] and dil[3] == [1] * 5
    assert all(b.attn.kernel_size == (7, 7) for level in dinat.levels for b in level.blocks)
    rates = [b.drop_path.p for level in nat.levels for b in level.blocks]
    assert rates[0] == 0.0 and abs(rates[-1] - 0.2) < 1e-6
    # NATTEN's parameter names
    keys = set(nat.state_dict())
    for key in ("patch_embed.proj.0.weight", "patch_embed.proj.1.weight", "patch_embed.norm.weight",
                "levels.0.blocks.0.attn.qkv.weight", "levels.0.blocks.0.attn.proj.bias",
                "levels.0.blocks.0.mlp.fc1.weight", "levels.0.downsample.reduction.weight",
                "levels.3.blocks.4.norm2.weight", "norm.weight", "head.weight"):
        assert key in keys, key


def test_features_only_shapes():
    model = create_model("nat_mini", features_only=True)
    feats = model(torch.randn(2, 3, 32, 32))
    assert [tuple(f.shape) for f in feats] == [(2, 32, 8, 8), (2, 64, 4, 4), (2, 128, 2, 2)]
    assert [i["num_chs"] for i in model.feature_info] == [32, 64, 128]
    assert [i["reduction"] for i in model.feature_info] == [4, 8, 16]
    assert not hasattr(model, "head")
    # odd sizes, and a 16×16 input whose last stage is 1×1 (windows clamped)
    feats = create_model("nat_mini", features_only=True)(torch.randn(1, 3, 45, 19))
    assert [tuple(f.shape[2:]) for f in feats] == [(12, 5), (6, 3), (3, 2)]
    feats = create_model("nat_mini", features_only=True)(torch.randn(1, 3, 16, 16))
    assert [tuple(f.shape[2:]) for f in feats] == [(4, 4), (2, 2), (1, 1)]
    feats = create_model("dinat_tiny", features_only=True, depths=(2, 2, 2, 2))(torch.randn(1, 3, 64, 64))
    assert [tuple(f.shape) for f in feats] == [(1, 64, 16, 16), (1, 128, 8, 8), (1, 256, 4, 4), (1, 512, 2, 2)]
    video = create_model("na3d_video_mini", features_only=True)(torch.randn(1, 3, 8, 32, 32))
    assert [tuple(f.shape) for f in video] == [(1, 32, 4, 8, 8), (1, 64, 4, 4, 4)]


def test_features_match_classifier_path():
    torch.manual_seed(0)
    a = create_model("nat_mini")
    b = create_model("nat_mini", features_only=True)
    b.load_state_dict(a.state_dict(), strict=False)
    x = torch.randn(1, 3, 32, 32)
    last = b(x)[-1]
    logits = a.head(a.norm(last.permute(0, 2, 3, 1)).mean(dim=(1, 2)))
    assert _max_err(logits, a(x)) < 1e-5


def test_effective_window():
    assert effective_window((56, 56), (7, 7), (8, 8), (1, 1)) == ((7, 7), (8, 8), (1, 1))
    assert effective_window((16, 9), (7, 7), (8, 1), (1, 1)) == ((7, 7), (2, 1), (1, 1))
    assert effective_window((4, 2), (7, 7), (1, 4), (1, 1)) == ((4, 2), (1, 1), (1, 1))
    assert effective_window((1, 6), (3, 3), (2, 2), (3, 3)) == ((1, 3), (1, 2), (1, 3))


@pytest.mark.parametrize("grid,kernel,dilation",
                         [((9, 7), 3, 2), ((16, 11), 7, 8), ((3, 1), 5, 1), ((1, 1), 3, 1)])
def test_adaptive_attention_matches_reference(grid, kernel, dilation):
    layer = AdaptiveNeighborhoodAttention2D(32, 2, kernel, dilation=dilation).double()
    x = torch.randn(2, *grid, 32, dtype=torch.float64)
    out = layer(x)
    ks, dil, st = effective_window(grid, layer.kernel_size, layer.dilation, layer.stride)
    q, k, v = layer.qkv(x).unflatten(-1, (3, 2, 16)).unbind(-3)
    if all(g == 1 for g in grid):
        ref = v
    else:
        # the reference accepts kernel 1 on a length-1 axis (its only key is the query itself)
        ref, _ = na_reference(q, k, v, ks, dil, st, (False, False))
    assert _max_err(out, layer.proj(ref.flatten(-2))) < 1e-12
    if all(g >= kernel * dilation for g in grid):  # no clamping: effattn's module exactly
        plain = effattn.NeighborhoodAttention2D(32, 2, kernel, dilation=dilation).double()
        plain.load_state_dict(layer.state_dict())
        assert torch.equal(plain(x), out)


def _overfit(model, batch, loss_fn, steps=50, lr=3e-3):
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    losses = []
    for _ in range(steps):
        loss = loss_fn(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_nat_mini_overfits_one_batch():
    torch.manual_seed(0)
    model = create_model("nat_mini")
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    losses = _overfit(model, (x, y), lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1]))
    assert losses[-1] * 10 <= losses[0], losses


def test_lightning_lm_overfits_one_batch():
    torch.manual_seed(0)
    model = create_model("lightning_lm_mini")
    ids = torch.randint(0, 256, (4, 33))

    def lm_loss(m, b):
        return nn.functional.cross_entropy(m(b[:, :-1]).flatten(0, 1), b[:, 1:].flatten())

    losses = _overfit(model, ids, lm_loss)
    assert losses[-1] * 10 <= losses[0], losses


def test_generate_matches_parallel_greedy():
    torch.manual_seed(0)
    model = create_model("lightning_lm_mini", vocab_size=64, depth=3).double()
    for p in model.parameters():  # larger weights than the 0.02 init: confident, varied choices
        p.data.normal_(0, 0.3) if p.dim() > 1 else None
    prompt = torch.randint(0, 64, (3, 5))
    out = model.generate(prompt, max_new_tokens=12)
    assert out.shape == (3, 17) and torch.equal(out[:, :5], prompt)
    with torch.no_grad():
        logits = model(out)
    # every generated token is the parallel forward's argmax at the previous position
    assert torch.equal(logits[:, 4:-1].argmax(-1), out[:, 5:])
    assert len(set(out[:, 5:].flatten().tolist())) > 3  # not a degenerate constant sequence
    assert model.training  # mode restored
    sampled = model.generate(prompt, 4, greedy=False, temperature=0.8, top_k=5,
                             generator=torch.Generator().manual_seed(1))
    assert sampled.shape == (3, 9) and int(sampled.max()) < 64


def test_lightning_lm_states_and_step():
    model = create_model("lightning_lm_mini", vocab_size=50).double().eval()
    ids = torch.randint(0, 50, (2, 21))
    with torch.no_grad():
        full, states = model(ids, return_states=True)
        assert len(states) == 2 and states[0].shape == (2, 4, 32, 32)
        head, mid = model(ids[:, :13], return_states=True)
        tail = model(ids[:, 13:], states=mid)
        assert _max_err(torch.cat([head, tail], 1), full) < 1e-10
        step_logits, _ = model.step(ids[:, 13], [s.clone() for s in mid])
        assert _max_err(step_logits, full[:, 13]) < 1e-10
    with pytest.raises(ValueError, match="one state per layer"):
        model(ids, states=[None])


# ---- converter --------------------------------------------------------------------------------

class _NattenStyleNA(nn.Module):
    """Stand-in for NATTEN's NeighborhoodAttention{1,2,3}D (NATTEN is not installed): its
    constructor arguments and attribute names, computed with effattn.reference."""
    rank = 0

    def __init__(self, dim, num_heads, kernel_size, dilation=1, is_causal=False, rel_pos_bias=False,
                 qkv_bias=True, qk_scale=None, attn_drop=0.0, proj_drop=0.0):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = qk_scale or self.head_dim ** -0.5
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.is_causal = is_causal
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        if rel_pos_bias:
            self.rpb = nn.Parameter(torch.zeros(num_heads, *[2 * kernel_size - 1] * self.rank))
        else:
            self.register_parameter("rpb", None)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x):
        tup = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v,) * self.rank  # noqa: E731
        q, k, v = self.qkv(x).unflatten(-1, (3, self.num_heads, self.head_dim)).unbind(-3)
        out, _ = na_reference(q, k, v, tup(self.kernel_size), tup(self.dilation), None,
                              tup(self.is_causal), self.scale)
        return self.proj_drop(self.proj(out.flatten(-2)))


class NeighborhoodAttention1D(_NattenStyleNA):
    rank = 1


class NeighborhoodAttention2D(_NattenStyleNA):
    rank = 2


class NeighborhoodAttention3D(_NattenStyleNA):
    rank = 3


class _NattenStyleNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Linear(16, 32)
        self.blocks = nn.ModuleList([
            NeighborhoodAttention2D(32, 2, 3),
            NeighborhoodAttention2D(32, 4, 3, dilation=2, qk_scale=0.3, qkv_bias=False),
        ])
        self.norm = nn.LayerNorm(32)
        self.attn1d = NeighborhoodAttention1D(32, 2, 5, dilation=2, is_causal=True)

    def forward(self, x):  # x [B, H, W, 16]
        x = self.stem(x)
        for block in self.blocks:
            x = x + block(self.norm(x))
        b, h, w, c = x.shape
        return self.attn1d(x.reshape(b, h * w, c))


def test_convert_natten_model_matches_reference():
    natten_model = _NattenStyleNet().double()
    converted = effattn.models.convert_natten_model(natten_model)
    assert isinstance(natten_model.blocks[0], NeighborhoodAttention2D)  # the original is untouched
    assert type(converted.blocks[0]) is effattn.NeighborhoodAttention2D
    assert type(converted.attn1d) is effattn.NeighborhoodAttention1D
    assert converted.blocks[1].dilation == (2, 2) and converted.blocks[1].scale == 0.3
    assert converted.blocks[1].qkv.bias is None and converted.attn1d.is_causal == (True,)
    x = torch.randn(2, 7, 9, 16, dtype=torch.float64)
    assert _max_err(converted(x), natten_model(x)) < 1e-12
    # a bare module, 3-D
    na3 = NeighborhoodAttention3D(32, 2, 3, dilation=(1, 2, 1)).double()
    new = effattn.models.convert_natten_model(na3)
    v = torch.randn(1, 4, 7, 5, 32, dtype=torch.float64)
    assert type(new) is effattn.NeighborhoodAttention3D and _max_err(new(v), na3(v)) < 1e-12
    # in place
    model = _NattenStyleNet()
    assert effattn.models.convert_natten_model(model, inplace=True) is model
    assert type(model.blocks[1]) is effattn.NeighborhoodAttention2D


def test_convert_rejects_relative_position_bias():
    model = _NattenStyleNet()
    model.blocks[1] = NeighborhoodAttention2D(32, 4, 3, rel_pos_bias=True)
    with pytest.raises(ValueError, match=r"blocks\.1: NATTEN relative position bias \(rpb\) is not supported"):
        effattn.models.convert_natten_model(model)
    state = model.state_dict()
    target = effattn.models.convert_natten_model(_NattenStyleNet())
    with pytest.raises(ValueError, match=r"blocks\.1\.rpb.*not supported"):
        effattn.models.load_natten_state_dict(target, state)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        effattn.models.convert_natten_model(NeighborhoodAttention2D(32, 2, 3, attn_drop=0.1))
    assert any("attention dropout" in str(w.message) for w in caught)


def test_load_natten_state_dict():
    natten_model = _NattenStyleNet()
    target = effattn.models.convert_natten_model(_NattenStyleNet())  # other random weights
    effattn.models.load_natten_state_dict(target, natten_model.state_dict())
    x = torch.randn(1, 6, 6, 16)
    assert _max_err(target(x), natten_model(x)) < 1e-5
    # a NATTEN NAT checkpoint (same names, no rpb) loads into effattn's NAT
    nat = create_model("nat_mini")
    twin = create_model("nat_mini")
    effattn.models.load_natten_state_dict(twin, nat.state_dict())
    img = torch.randn(1, 3, 32, 32)
    assert torch.equal(twin(img), nat(img))


# ---- torch.compile ------------------------------------------------------------------------------

def _compile_check(module, x, forward):
    torch._dynamo.reset()
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_c, out_e = forward(compiled, x1), forward(module, x2)
    assert _max_err(out_c, out_e) < 1e-5
    out_c.square().sum().backward()
    out_e.square().sum().backward()
    assert _max_err(x1.grad, x2.grad) < 1e-4


def test_compile_fullgraph_na_block():
    block = NATLayer(32, 1, kernel_size=7, dilation=2, mlp_ratio=2.0)
    _compile_check(block, torch.randn(2, 15, 17, 32), lambda m, x: m(x))


def test_compile_fullgraph_lightning_block():
    block = LightningBlock(64, 2, layer_idx=1, num_layers=3, mlp_hidden=96)
    _compile_check(block, torch.randn(2, 29, 64), lambda m, x: m(x)[0])


# ---- state dict ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["nat_mini", "na3d_video_mini", "lightning_lm_mini"])
def test_state_dict_round_trip(name, tmp_path):
    a = create_model(name).eval()
    b = create_model(name).eval()
    torch.save(a.state_dict(), tmp_path / "ckpt.pt")
    b.load_state_dict(torch.load(tmp_path / "ckpt.pt", weights_only=True))
    if name == "lightning_lm_mini":
        x = torch.randint(0, 256, (2, 9))
        assert b.lm_head.weight is b.embed.weight
    elif name == "nat_mini":
        x = torch.randn(2, 3, 32, 32)
    else:
        x = torch.randn(1, 3, 8, 32, 32)
    assert torch.equal(a(x), b(x))
    c = copy.deepcopy(b)
    assert torch.equal(c(x), a(x))


# ---- examples (a few steps each) ----------------------------------------------------------------

def _example(name):
    import importlib.util
    import os
    path = os.path.join(os.path.dirname(__file__), "..", "examples", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"_example_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_train_lightning_lm_runs(tmp_path, capsys):
    rc = _example("train_lightning_lm").main(["--steps", "3", "--log-every", "1", "--max-new-tokens", "8",
                                              "--checkpoint", str(tmp_path / "lm.pt")])
    out = capsys.readouterr().out
    assert rc == 0 and "perplexity" in out and "greedy sample" in out and (tmp_path / "lm.pt").exists()


def test_example_train_nat_digits_runs(tmp_path, capsys):
    # Without scikit-learn the example prints how to install it and exits 0.
    rc = _example("train_nat_digits").main(["--steps", "3", "--log-every", "1", "--batch-size", "16",
                                            "--checkpoint", str(tmp_path / "nat.pt")])
    out = capsys.readouterr().out
    assert rc == 0
    assert "pip install scikit-learn" in out or ("accuracy" in out and (tmp_path / "nat.pt").exists())
