"""Function vectors (Todd et al.): head outputs from hook_z and W_O, causal indirect
effects, the vector from the top heads, applied at the last position.

Ground truth: the identity attn_out = sum_h z_h W_O[h] + b_O; linearity of a head's output in
z; steer-2l's top-CIE head is the one that reads the mode token (highest attention from the
last position to position 0); induction-2l answers a fixed mapping with its layer-1
(induction) heads.
"""

from __future__ import annotations

import pytest
import torch

from interp import function_vectors as fvs
from interp.steering import SteeringVector, sweep
from interp.tasks import functions


@pytest.fixture(scope="module")
def mode_task():
    return functions.mode_task_prompts(32, seed=0)


@pytest.fixture(scope="module")
def mode_effects(steer_model, mode_task):
    return fvs.head_indirect_effects(
        steer_model, mode_task.clean, mode_task.corrupt, metric=mode_task.metric(), progress=False
    )


def test_head_outputs_sum_to_the_attention_output(steer_model, mode_task):
    m = steer_model
    _, cache = m.run_with_cache(mode_task.clean[:4], names=lambda n: n.endswith(("attn.hook_z", "hook_attn_out")))
    W_O = fvs.head_output_weights(m)
    for l in range(m.cfg.n_layers):
        per_head = fvs.head_outputs(cache[f"blocks.{l}.attn.hook_z"][:, :, None], W_O[l : l + 1])  # [b, p, 1, h, d]
        total = per_head[:, :, 0].sum(-2) + m.module.blocks[l].attn.b_O.detach()
        torch.testing.assert_close(total, cache[f"blocks.{l}.hook_attn_out"], rtol=1e-4, atol=1e-4)
    mean_out = fvs.mean_head_outputs(m, mode_task.clean)
    assert mean_out.shape == (2, 4, 64)
    z = torch.stack([cache[f"blocks.{l}.attn.hook_z"][:, -1] for l in range(2)], 1)  # [4, layer, head, d_head]
    torch.testing.assert_close(
        fvs.mean_head_outputs(m, mode_task.clean[:4]), fvs.head_outputs(z, W_O).mean(0), rtol=1e-4, atol=1e-5
    )


def test_patching_mean_z_is_patching_the_mean_head_output(steer_model, mode_task):
    """CIE patches z; by linearity that equals replacing the head's output in attn_out."""
    m, l, h = steer_model, 0, 1
    z_mean = fvs.mean_head_z(m, mode_task.clean)
    W_O = fvs.head_output_weights(m)
    _, cache = m.run_with_cache(mode_task.corrupt, names=[f"blocks.{l}.attn.hook_z"])
    own = cache[f"blocks.{l}.attn.hook_z"][:, -1, h] @ W_O[l, h]

    def patch_z(z, hook):
        z = z.clone()
        z[:, -1, h] = z_mean[l, h]
        return z

    def patch_out(out, hook):
        out = out.clone()
        out[:, -1] += z_mean[l, h] @ W_O[l, h] - own
        return out

    a = m.run_with_hooks(mode_task.corrupt, [(f"blocks.{l}.attn.hook_z", patch_z)])
    b = m.run_with_hooks(mode_task.corrupt, [(f"blocks.{l}.hook_attn_out", patch_out)])
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_top_cie_head_is_the_mode_reading_head(steer_model, mode_task, mode_effects):
    eff = mode_effects
    assert len(eff) == 8 and list(eff.columns) == ["layer", "head", "p_corrupt", "p_patched", "cie"]
    assert eff["cie"].is_monotonic_decreasing
    _, cache = steer_model.run_with_cache(mode_task.clean, names=lambda n: n.endswith("hook_pattern"))
    to_cue = torch.stack([cache[f"blocks.{l}.attn.hook_pattern"][:, :, -1, 0].mean(0) for l in range(2)])
    reader = divmod(int(to_cue.argmax()), 4)
    top = eff.iloc[0]
    assert (int(top["layer"]), int(top["head"])) == reader
    assert top.cie > 0.2 and top.cie > 2 * eff.iloc[1].cie


def test_function_vector_moves_zero_shot_prompts_to_the_task(steer_model, mode_task, mode_effects, tmp_path):
    m = steer_model
    fv = fvs.function_vector(m, mode_task.clean, effects=mode_effects, top_k=4)
    assert isinstance(fv, SteeringVector) and fv.method == "function_vector"
    assert fv.meta["heads"][0] == [int(mode_effects["layer"][0]), int(mode_effects["head"][0])]
    outputs = fvs.mean_head_outputs(m, mode_task.clean)
    torch.testing.assert_close(fv.vector, sum(outputs[l, h] for l, h in fv.meta["heads"]))
    assert fv.site == f"blocks.{max(l for l, _ in fv.meta['heads'])}.hook_resid_post"
    df = sweep(
        m, [fv], None, [0.0, 2.0, 4.0, 8.0], mode_task.zero_shot, mode_task.metric(), start_pos=-1, progress=False
    )
    steer = df[df.vector == "steer"].set_index("coef")["behaviour"]
    rand = df[df.vector == "random"].set_index("coef")["behaviour"]
    assert steer.loc[0.0] < 0.2
    assert steer.is_monotonic_increasing and steer.loc[8.0] > steer.loc[0.0] + 0.3
    assert rand.max() < steer.loc[0.0] + 0.1
    back = SteeringVector.load(fv.save(tmp_path / "fv"), m)
    assert torch.equal(back.vector, fv.vector) and back.meta["heads"] == fv.meta["heads"]
    # the FV acts at the last position only
    with fv.apply(m, coef=8.0, start_pos=-1):
        out = m(mode_task.zero_shot)
    torch.testing.assert_close(out[:, :-1], m(mode_task.zero_shot)[:, :-1], rtol=0, atol=0)


def test_fixed_mapping_prompts_and_induction_heads(induction_model):
    fp = functions.fixed_mapping_prompts(32, d_vocab=64, seed=0)
    f = fp.info["mapping"]
    assert len(f) == 8 and len(set(f.values())) == 8 and fp.targets == sorted(f.values())
    for c, k, a in zip(fp.clean, fp.corrupt, fp.answers):
        keys, vals = c[1:-1:2].tolist(), c[2:-1:2].tolist()
        assert all(f[x] == y for x, y in zip(keys, vals)) and c[-1].item() in keys and f[c[-1].item()] == a
        assert all(f[x] != y for x, y in zip(keys, k[2:-1:2].tolist()))  # every label shuffled away
    assert fp.zero_shot.shape == (32, 2) and torch.equal(fp.zero_shot[:, 1], fp.clean[:, -1])
    m = induction_model
    metric = fp.metric()
    assert metric(m(fp.clean)) > 5 * metric(m(fp.corrupt))  # the model follows the context
    eff = fvs.head_indirect_effects(m, fp.clean, fp.corrupt, fp.answers, progress=False)
    by_layer = eff.groupby("layer")["cie"].max()
    assert by_layer[1] > by_layer[0]  # induction heads live in layer 1


def test_bad_input(steer_model, flipflop_or_random_rnn, mode_task, mode_effects):
    m = steer_model
    with pytest.raises(ValueError, match="top_k"):
        fvs.function_vector(m, mode_task.clean, effects=mode_effects, top_k=0)
    with pytest.raises(ValueError, match="outside the shortest prompt"):
        fvs.head_indirect_effects(m, mode_task.clean, mode_task.corrupt[:, :3], metric=mode_task.metric(), pos=5)
    with pytest.raises(ValueError, match="exactly one of"):
        fvs.head_indirect_effects(m, mode_task.clean, mode_task.corrupt)
    with pytest.raises(ValueError, match=r"answers must be \[32\]"):
        fvs.head_indirect_effects(m, mode_task.clean, mode_task.corrupt, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="needs attention heads"):
        fvs.mean_head_outputs(flipflop_or_random_rnn, torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="n_demos"):
        functions.fixed_mapping_prompts(4, n_keys=2, n_demos=4)


@pytest.fixture(scope="module")
def flipflop_or_random_rnn():
    import interp

    return interp.load(dict(cell="lstm", d_vocab=7, d_model=8, n_layers=1, n_ctx=16))
