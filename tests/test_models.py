"""Model zoo: registry, parameter counts, FLOPs, init, batch-norm state, bad input. No torch."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resnet_jax import models

# torchvision's documented parameter counts (torchvision.models docs, "Params").
TORCHVISION_PARAMS = {
    "resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
    "resnet101": 44_549_160, "resnet152": 60_192_808, "wide_resnet50_2": 68_883_240,
    "wide_resnet101_2": 126_886_696, "resnext50_32x4d": 25_028_904,
    "resnext101_32x8d": 88_791_336,
}
# He et al. 2015, Table 6 (millions of parameters, as printed).
PAPER_TABLE6_PARAMS = {"resnet20": 0.27, "resnet32": 0.46, "resnet44": 0.66, "resnet56": 0.85,
                       "resnet110": 1.7, "resnet1202": 19.4}
# torchvision's documented GFLOPS (multiply-accumulates of a 224x224 forward pass).
TORCHVISION_GFLOPS = {"resnet18": 1.814, "resnet34": 3.664, "resnet50": 4.089,
                      "resnet101": 7.801, "resnet152": 11.514}


def _model(name, **options):
    return models.create_model(name, num_classes=10 if models.is_cifar(name) else 1000, **options)


@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMS))
def test_param_count_equals_torchvision(name):
    assert models.count_params(_model(name)) == TORCHVISION_PARAMS[name]


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "resnet1202"
                                  else n for n in sorted(PAPER_TABLE6_PARAMS)])
def test_cifar_param_count_matches_paper_table6(name):
    millions = models.count_params(_model(name)) / 1e6
    digits = 1 if PAPER_TABLE6_PARAMS[name] >= 1 else 2
    assert round(millions, digits) == PAPER_TABLE6_PARAMS[name]


def test_other_param_counts():
    # resnet200: torchvision's ResNet(Bottleneck, [3, 24, 36, 3]); plain nets: their residual
    # twins minus the projection shortcuts' parameters; option B adds two 1x1 projections.
    assert models.count_params(_model("resnet200")) == 64_673_832
    resnet18_projections = sum(c_in * c_out + 2 * c_out
                               for c_in, c_out in ((64, 128), (128, 256), (256, 512)))
    assert models.count_params(_model("plain18")) == 11_689_512 - resnet18_projections
    assert models.count_params(_model("plain20")) == models.count_params(_model("resnet20"))
    # resnet8 (n = 1, not in Table 6): stem conv + BN, one block per stage (two 3x3 convs + two
    # BNs each; option A shortcuts have no parameters), the 64 -> 10 classifier.
    blocks = sum(9 * c_in * c_out + 9 * c_out * c_out + 4 * c_out
                 for c_in, c_out in ((16, 16), (16, 32), (32, 64)))
    assert models.count_params(_model("resnet8")) == 9 * 3 * 16 + 2 * 16 + blocks + 64 * 10 + 10
    option_b_extra = (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)
    assert (models.count_params(_model("resnet20", shortcut="B"))
            == models.count_params(_model("resnet20")) + option_b_extra)


def test_every_name_is_counted():
    named = set(TORCHVISION_PARAMS) | set(PAPER_TABLE6_PARAMS) | {
        "resnet8", "resnet200", "plain18", "plain34", "plain20", "plain32", "plain44", "plain56",
        "plain110"}
    assert named == set(models.MODELS)
    for name in ("plain34", "plain32", "plain44", "plain56", "plain110"):
        residual = name.replace("plain", "resnet")
        assert models.count_params(_model(name)) <= models.count_params(_model(residual))


@pytest.mark.parametrize("name", sorted(TORCHVISION_GFLOPS))
def test_forward_macs_match_torchvision_gflops(name):
    assert round(models.forward_macs(_model(name), 224) / 1e9, 3) == TORCHVISION_GFLOPS[name]


def test_unknown_model_and_option_errors_list_the_valid_ones():
    with pytest.raises(ValueError, match="unknown model 'resnet19'.*resnet18.*wide_resnet50_2"):
        models.create_model("resnet19", num_classes=10)
    with pytest.raises(ValueError, match="unknown model option.*colour.*bn_momentum"):
        models.create_model("resnet20", num_classes=10, colour="red")
    with pytest.raises(ValueError, match="shortcut must be"):
        models.create_model("resnet20", num_classes=10, shortcut="C")


@pytest.mark.parametrize("shape", [(2, 32, 32), (2, 32, 32, 1), (1, 2, 32, 32, 3)])
def test_bad_input_shape_is_a_clear_error(shape):
    model = _model("resnet20")
    with pytest.raises(ValueError,
                       match=r"expected NHWC images of shape \(batch, height, width, 3\)"):
        model.init(jax.random.PRNGKey(0), jnp.zeros(shape), train=False)


@pytest.fixture(scope="module")
def resnet20_variables():
    model = _model("resnet20")
    return model, jax.jit(lambda k: model.init(k, jnp.zeros((1, 32, 32, 3)), train=False))(
        jax.random.PRNGKey(0))


def test_init_follows_torchvision(resnet20_variables):
    _, variables = resnet20_variables
    params = variables["params"]
    # Kaiming normal, fan-out: std = sqrt(2 / (k*k*out)); layer3 convs have 3*3*64 = 576.
    kernels = np.concatenate([np.ravel(params[f"layer3_{i}"][c]["kernel"])
                              for i in range(3) for c in ("conv1", "conv2")])
    expected_std = np.sqrt(2 / 576)
    assert abs(kernels.std() / expected_std - 1) < 0.03  # 5 x 36,864 normal samples
    assert abs(kernels.mean()) < 0.03 * expected_std
    # torch.nn.Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias.
    bound = 1 / np.sqrt(64)
    for leaf in (params["fc"]["kernel"], params["fc"]["bias"]):
        assert np.abs(leaf).max() <= bound and np.abs(leaf).max() > 0.8 * bound
    bn = params["layer1_0"]["bn2"]
    np.testing.assert_array_equal(bn["scale"], 1)
    np.testing.assert_array_equal(bn["bias"], 0)
    stats = variables["batch_stats"]["bn1"]
    np.testing.assert_array_equal(stats["mean"], 0)
    np.testing.assert_array_equal(stats["var"], 1)


@pytest.mark.slow  # over ~5 s: make test-fast leaves it out
def test_zero_init_residual_zeroes_each_branch_last_bn():
    model = _model("resnet18", zero_init_residual=True)
    variables = jax.jit(lambda k: model.init(k, jnp.zeros((1, 32, 32, 3)), train=False))(
        jax.random.PRNGKey(0))
    blocks = [name for name in variables["params"] if name.startswith("layer")]
    assert len(blocks) == 8
    for name in blocks:
        block = variables["params"][name]
        np.testing.assert_array_equal(block["bn2"]["scale"], 0)
        np.testing.assert_array_equal(block["bn1"]["scale"], 1)
        if "downsample" in block:
            np.testing.assert_array_equal(block["downsample"]["bn"]["scale"], 1)


@pytest.mark.slow  # over ~5 s: make test-fast leaves it out
def test_eval_mode_uses_running_stats_and_mutates_nothing(resnet20_variables):
    model, variables = resnet20_variables
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 32, 32, 3))
    out, state = model.apply(variables, x, train=False, mutable=["batch_stats"])
    chex_equal = jax.tree_util.tree_map(np.array_equal, state["batch_stats"],
                                        variables["batch_stats"])
    assert all(jax.tree_util.tree_leaves(chex_equal))
    # Eval output does not depend on the rest of the batch (running stats, not batch stats).
    np.testing.assert_allclose(model.apply(variables, x[:1], train=False), out[:1], rtol=1e-6)


def test_train_mode_returns_new_batch_stats(resnet20_variables):
    model, variables = resnet20_variables
    x = 3 + jax.random.normal(jax.random.PRNGKey(1), (4, 32, 32, 3))
    _, state = model.apply(variables, x, train=True, mutable=["batch_stats"])
    # First BN sees conv1(x); its running mean moved 10% of the way to the batch mean.
    conv1 = jax.lax.conv_general_dilated(x, variables["params"]["conv1"]["kernel"], (1, 1),
                                         ((1, 1), (1, 1)),
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(state["batch_stats"]["bn1"]["mean"],
                               0.1 * conv1.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)
    n = conv1.size // conv1.shape[-1]
    np.testing.assert_allclose(state["batch_stats"]["bn1"]["var"],
                               0.9 + 0.1 * conv1.var(axis=(0, 1, 2)) * n / (n - 1),
                               rtol=1e-4)


@pytest.mark.slow  # over ~5 s: make test-fast leaves it out
def test_bf16_compute_keeps_float32_params_and_stats():
    model = _model("resnet20", dtype=jnp.bfloat16)
    x = jnp.ones((2, 8, 8, 3))
    variables = model.init(jax.random.PRNGKey(0), x, train=False)
    logits, state = model.apply(variables, x, train=True, mutable=["batch_stats"])
    assert logits.dtype == jnp.bfloat16
    dtypes = {leaf.dtype for leaf in jax.tree_util.tree_leaves((variables, state))}
    assert dtypes == {jnp.dtype(jnp.float32)}


def test_importing_the_package_does_not_import_torch():
    code = ("import sys, resnet_jax, resnet_jax.models; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_models_package_imports_nothing_from_the_cpu_kernels():
    """Plain Flax: faster kernels reach the models only through the kernels seam."""
    import ast
    import pathlib
    package = pathlib.Path(models.__file__).parent
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.startswith("resnet_jax.cpu") for n in names), (path.name, names)


@pytest.mark.slow  # over ~5 s: make test-fast leaves it out
def test_models_default_to_the_portable_kernels():
    x = jnp.zeros((2, 16, 16, 3))
    model = _model("resnet18")
    variables = model.init(jax.random.PRNGKey(0), x, train=False)
    jaxpr = str(jax.make_jaxpr(lambda v, x: model.apply(v, x, train=True,
                                                        mutable=["batch_stats"]))(variables, x))
    assert "ffi_call" not in jaxpr and "custom_call" not in jaxpr  # no extension kernels


# --- backbone: pooled features and feature maps (timm's conventions) -------------------------

def test_feature_info_gives_timm_channels_and_reductions():
    """timm's feature_info for these models: channels and reductions of out_indices 0..4."""
    def described(name):
        info = models.create_model(name, num_classes=0, features_only=True).feature_info
        return [(f.index, f.channels, f.reduction, f.module) for f in info]

    assert described("resnet18") == [(0, 64, 2, "relu"), (1, 64, 4, "layer1"),
                                     (2, 128, 8, "layer2"), (3, 256, 16, "layer3"),
                                     (4, 512, 32, "layer4")]
    assert [c for _, c, _, _ in described("resnet50")] == [64, 256, 512, 1024, 2048]
    assert [c for _, c, _, _ in described("wide_resnet50_2")] == [64, 256, 512, 1024, 2048]
    assert described("resnet20") == [(0, 16, 1, "relu"), (1, 16, 1, "layer1"),
                                     (2, 32, 2, "layer2"), (3, 64, 4, "layer3")]


def test_feature_maps_have_the_shapes_feature_info_promises():
    model = models.create_model("resnet50", num_classes=0, features_only=True)
    shapes = jax.eval_shape(lambda x: model.init_with_output(
        jax.random.PRNGKey(0), x, train=False)[0], jnp.zeros((2, 64, 96, 3)))
    assert [s.shape for s in shapes] == [(2, 64 // f.reduction, 96 // f.reduction, f.channels)
                                         for f in model.feature_info]


def test_out_indices_as_timm_reads_them_an_int_is_the_last_n_maps():
    def indices(value):
        model = models.create_model("resnet18", num_classes=0, features_only=True,
                                    out_indices=value)
        return [f.index for f in model.feature_info]

    assert indices(3) == [2, 3, 4] and indices(1) == [4] and indices(5) == [0, 1, 2, 3, 4]
    assert indices((-1,)) == [4] and indices([0, -2]) == [0, 3]
    assert indices(np.int64(2)) == [3, 4]


def test_a_subset_of_feature_maps_builds_only_the_stages_it_needs():
    model = models.create_model("resnet18", num_classes=0, features_only=True,
                                out_indices=(1, 2))
    params = models.init_shapes(model, 64)["params"]
    assert {name.split("_")[0] for name in params} == {"conv1", "bn1", "layer1", "layer2"}
    pooled = models.init_shapes(models.create_model("resnet18", num_classes=0),
                                64)["params"]
    assert "fc" not in pooled and "layer4_1" in pooled


def test_classifier_weights_serve_every_output():
    """One set of variables (a classifier's, head included) gives logits, pooled features
    and feature maps; the logits are the head applied to the pooled features."""
    classifier = models.create_model("resnet8", num_classes=10)
    x = jnp.asarray(np.random.RandomState(0).randn(2, 19, 23, 3), jnp.float32)
    variables = classifier.init(jax.random.PRNGKey(1), x, train=False)
    logits = classifier.apply(variables, x, train=False)
    pooled = models.create_model("resnet8", num_classes=0).apply(variables, x, train=False)
    maps = models.create_model("resnet8", num_classes=0, features_only=True).apply(
        variables, x, train=False)
    fc = variables["params"]["fc"]
    np.testing.assert_allclose(pooled @ fc["kernel"] + fc["bias"], logits, rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(maps[-1].mean(axis=(1, 2)), pooled, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("options,message", [
    ({"num_classes": -1}, r"num_classes must be >= 1 \(logits\) or 0"),
    ({"num_classes": 0, "out_indices": (1,)}, "needs features_only=True"),
    ({"num_classes": 0, "features_only": True, "out_indices": (0, 5)}, "0..4"),
    ({"num_classes": 0, "features_only": True, "out_indices": ()}, "distinct numbers"),
    ({"num_classes": 0, "features_only": True, "out_indices": 6}, r"the last N, 1..5"),
    ({"num_classes": 0, "features_only": True, "out_indices": (4, -1)}, "distinct numbers"),
    ({"num_classes": 0, "features_only": True, "out_indices": "3"}, "an int .* or a sequence"),
    ({"num_classes": 0, "features_only": True, "out_indices": (1.5,)}, "sequence of ints"),
])
def test_backbone_option_mistakes_are_user_errors(options, message):
    from resnet_jax.errors import UserError

    with pytest.raises(UserError, match=message):
        models.create_model("resnet18", **options)
