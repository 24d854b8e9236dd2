import pytest
from conftest import TINY_CONFIG, assert_one_line_error, run_script

from src.args import BOUNDS, DEFAULTS, KINDS, parse_args
from src.errors import UserInputError


def write(tmp_path, text):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


def test_yaml_values_are_defaults_and_command_line_wins():
    args = parse_args(["--config", TINY_CONFIG])
    assert args.image_size == 32 and args.layers == [1, 1, 1, 1] and args.is_dynamic_loss_scale is True
    args = parse_args(["--config", TINY_CONFIG, "--image_size", "48", "--layers", "[2, 1, 1, 1]",
                       "--is_dynamic_loss_scale", "False", "--base_lr", "1e-3", "--mean", "[0.1, 0.2, 0.3]"])
    assert args.image_size == 48 and isinstance(args.image_size, int)
    assert args.layers == [2, 1, 1, 1]
    assert args.is_dynamic_loss_scale is False
    assert args.base_lr == pytest.approx(1e-3)
    assert args.mean == [0.1, 0.2, 0.3]


def test_seed_spellings_map_to_one_key(tmp_path):
    args = parse_args(["--config", write(tmp_path, "lr_init: 0.02\nnum_epochs: 7\nmixup_alpha: 0.5\n"
                                                   "enable_clip_norm: true\ngradient_norm: 2.0\n")])
    assert (args.base_lr, args.epochs, args.mix_up, args.use_global_norm, args.clip_global_norm_value) == \
        (0.02, 7, 0.5, True, 2.0)
    assert parse_args(["--config", write(tmp_path, "epochs: 3\n"), "--num_epochs", "5"]).epochs == 5
    with pytest.raises(UserInputError, match="given twice"):
        parse_args(["--config", write(tmp_path, "epochs: 3\nnum_epochs: 4\n")])


def test_unknown_yaml_key_names_key_and_closest(tmp_path):
    with pytest.raises(UserInputError, match=r"unknown config key 'bach_size'.*did you mean 'batch_size'"):
        parse_args(["--config", write(tmp_path, "bach_size: 3\n")])


def test_unknown_command_line_key_names_key_and_closest():
    with pytest.raises(UserInputError, match=r"'lable_smoothing' in the command line; did you mean 'label_smoothing'"):
        parse_args(["--config", TINY_CONFIG, "--lable_smoothing", "0.2"])


def test_bad_values_and_files(tmp_path):
    with pytest.raises(UserInputError, match="enable_ema must be True or False, got .maybe."):
        parse_args(["--enable_ema", "maybe"])
    with pytest.raises(UserInputError, match="config file not found"):
        parse_args(["--config", str(tmp_path / "missing.yaml")])
    with pytest.raises(UserInputError, match="must hold a mapping"):
        parse_args(["--config", write(tmp_path, "- a\n- b\n")])
    # where the parser stopped, not only the construct it was in ("while parsing a flow sequence")
    with pytest.raises(UserInputError, match=r"is not valid YAML: expected ',' or '\]', but got '<stream end>' at "
                                             r"line 4, column 1$"):
        parse_args(["--config", write(tmp_path, "epochs: 3\nlayers: [1, 1,\nseed: 2\n")])
    with pytest.raises(UserInputError, match=r"argument --layers: not valid YAML: expected ',' or '\]', but got "
                                             r"'<stream end>' at line 1, column 6$"):
        parse_args(["--layers", "[1, 1"])


def test_yaml_numbers_written_without_a_dot_are_numbers(tmp_path):
    # YAML 1.1 reads 3e-2 as text; the optimizer and the schedule then failed on a string
    args = parse_args(["--config", write(tmp_path, "base_lr: 3e-2\nweight_decay: 5e-2\nmask_ratio: 75e-2\n"),
                       "--drop_path_rate", "1e-1"])
    assert (args.base_lr, args.weight_decay, args.mask_ratio, args.drop_path_rate) == (0.03, 0.05, 0.75, 0.1)
    args = parse_args(["--config", write(tmp_path, "batch_size: 16.0\nepochs: '3'\n"), "--image_size", "48.0"])
    assert (args.batch_size, args.epochs, args.image_size) == (16, 3, 48)
    assert all(isinstance(value, int) for value in (args.batch_size, args.epochs, args.image_size))


@pytest.mark.parametrize("key, value, message", [
    ("batch_size", "0", "batch_size must be a whole number in [1, inf), got 0"),
    ("image_size", "22.5", "image_size must be a whole number in [1, inf), got 22.5"),
    ("seed", "-1", "seed must be a whole number in [0, inf), got -1"),
    ("drop_path_rate", "1", "drop_path_rate must be a number in [0, 1), got 1"),
    ("mask_ratio", "1.0", "mask_ratio must be a number in [0, 1), got 1.0"),
    ("crop_ratio", "0", "crop_ratio must be a number in (0, 1], got 0"),
    ("base_lr", "-0.1", "base_lr must be a number in [0, inf), got -0.1"),
    ("loss_scale", "inf", "loss_scale must be a number in (0, inf), got inf"),
    ("rand_augment_magnitude", "31", "rand_augment_magnitude must be a whole number in [0, 30], got 31"),
    ("num_heads", "many", "num_heads must be a whole number in [1, inf), got 'many'"),
])
def test_numbers_outside_their_bounds_are_refused_from_the_config_and_the_command_line(tmp_path, key, value,
                                                                                        message):
    with pytest.raises(UserInputError) as refused:
        parse_args([f"--{key}", value])
    assert str(refused.value) == message
    with pytest.raises(UserInputError) as refused:
        parse_args(["--config", write(tmp_path, f"{key}: {value}\n")])
    assert str(refused.value) == message


def test_zero_stays_allowed_where_it_means_something():
    # never evaluate, epoch ends only, keep all, no training left, no frozen blocks, no RandAugment, a whole epoch
    # per sink, no layer scale, no mask, no warmup, no weight decay
    zeros = ["eval_interval", "save_checkpoint_steps", "keep_checkpoint_max", "epochs", "freeze_blocks",
             "rand_augment_num_layers", "sink_size", "init_values", "mask_ratio", "warmup_length", "weight_decay"]
    args = parse_args([argument for key in zeros for argument in (f"--{key}", "0")])
    assert all(getattr(args, key) == 0 for key in zeros)
    assert parse_args(["--sink_size", "-1"]).sink_size == -1


def test_every_numeric_key_has_bounds_its_default_keeps(tmp_path):
    numeric = {key for key, (default, _) in DEFAULTS.items()
               if isinstance(default, (int, float)) and not isinstance(default, bool)}
    assert numeric <= set(BOUNDS) <= set(DEFAULTS)
    assert not set(BOUNDS) & set(KINDS) and set(BOUNDS) | set(KINDS) == set(DEFAULTS)  # every key is checked
    parse_args([])  # every default within its bounds
    with pytest.raises(UserInputError, match=r"batch_size must be a whole number in \[1, inf\), got True"):
        parse_args(["--config", write(tmp_path, "batch_size: true\n")])


@pytest.mark.parametrize("key, value, message", [
    ("arch", "123", "arch must be text, got 123"),
    ("data_url", "[a, b]", "data_url must be text, got ['a', 'b']"),
    ("optimizer", "[adamw]", "optimizer must be text, got ['adamw']"),
    ("task", "null", "task must be text, got None"),
    ("enable_ema", "sometimes", "enable_ema must be True or False, got 'sometimes'"),
    ("rel_pos_bias", "maybe", "rel_pos_bias must be True or False, got 'maybe'"),
    ("mean", "0.5", "mean must be a list of 3 numbers, each a number in [0, 1], got 0.5"),
    ("mean", "[0.5, 0.5]", "mean must be a list of 3 numbers, each a number in [0, 1], got [0.5, 0.5]"),
    ("std", "[0, 0.5, 0.5]", "std must be a list of 3 numbers, each a number in (0, 1], got [0, 0.5, 0.5]"),
    ("beta", "[0.9, 1.0]", "beta must be a list of 2 numbers, each a number in [0, 1), got [0.9, 1.0]"),
    ("layers", "[1, 1, 1]", "layers must be a list of 4 numbers, each a whole number in [1, inf), got [1, 1, 1]"),
    ("layers", "abc", "layers must be a list of 4 numbers, each a whole number in [1, inf), got 'abc'"),
    ("tokenizer_args", "[64]", "tokenizer_args must be a mapping of argument names to values, got [64]"),
    ("mixup_mode", "elem", "mixup_mode must be one of ['batch'], got 'elem'"),
])
def test_values_of_the_wrong_kind_are_refused_from_the_config(tmp_path, key, value, message):
    # each of these ended in a traceback deep in the model, the data pipeline or the optimizer, or (mixup_mode)
    # was ignored
    with pytest.raises(UserInputError) as refused:
        parse_args(["--config", write(tmp_path, f"{key}: {value}\n")])
    assert str(refused.value) == message
    if key not in ("arch", "data_url", "optimizer", "task"):  # on the command line these are text as given
        with pytest.raises(UserInputError) as refused:
            parse_args([f"--{key}", value])
        assert str(refused.value) == message


def test_flags_and_text_are_read_as_what_their_key_holds(tmp_path):
    # a quoted "false" in a config was a non-empty string, so true: EMA and graph mode stayed on
    args = parse_args(["--config", write(tmp_path, 'enable_ema: "false"\ngraph_mode: "no"\nrecompute: 1\n'
                                                   'dataset_sink_mode: "False"\nuse_mean_pooling: "true"\n')])
    assert (args.enable_ema, args.graph_mode, args.recompute, args.dataset_sink_mode, args.use_mean_pooling) == \
        (False, False, True, False, True)
    # a config's value does not decide how the command line is read: data_url 5 made --data_url a number
    assert parse_args(["--config", write(tmp_path, "data_url: 5\n"), "--data_url", "/data/x"]).data_url == "/data/x"
    assert parse_args(["--pretrained", "7"]).pretrained == "7"  # a file named 7, not the number
    assert parse_args(["--config", write(tmp_path, "pretrained: x.ckpt\n"), "--pretrained", "null"]).pretrained is None
    assert parse_args(["--rel_pos_bias", "null"]).rel_pos_bias is None
    with pytest.raises(UserInputError, match="enable_ema must be True or False, got 3"):
        parse_args(["--config", write(tmp_path, "enable_ema: 3\n")])


def billion_laughs(levels):
    """A config whose few lines of anchors within anchors expand to 9 ** levels values."""
    lines = ["tokenizer_args:", '  l0: &l0 ["ha", "ha", "ha", "ha", "ha", "ha", "ha", "ha", "ha"]']
    lines += [f"  l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * 9)}]" for level in range(1, levels)]
    return "\n".join(lines) + f"\nbatch_size: *l{levels - 1}\n"


def test_hostile_yaml_is_refused_before_anything_walks_it(tmp_path):
    # 9 ** 8 values: printing batch_size's refusal took a 200 MB line; 9 ** 10 would not fit in memory
    with pytest.raises(UserInputError, match=r"expands to \d{10} values, more than 100000 \(YAML anchors used "
                                             r"within anchors\)$"):
        parse_args(["--config", write(tmp_path, billion_laughs(10))])
    with pytest.raises(UserInputError, match="holds a value that contains itself"):
        parse_args(["--config", write(tmp_path, "tokenizer_args: &a {x: *a}\n")])
    with pytest.raises(UserInputError, match="nests its values too deeply"):
        parse_args(["--config", write(tmp_path, "mean: " + "[" * 20000 + "]" * 20000 + "\n")])
    # an anchor used a few times is fine
    args = parse_args(["--config", write(tmp_path, "mean: &m [0.4, 0.5, 0.6]\nteacher_mean: *m\n")])
    assert args.mean == args.teacher_mean == [0.4, 0.5, 0.6]
    # a long value in a refusal is shortened
    with pytest.raises(UserInputError) as refused:
        parse_args(["--config", write(tmp_path, f"mean: {list(range(1000))}\n")])
    assert len(str(refused.value)) < 120


def test_train_reports_config_errors_in_one_line(tmp_path):
    result = run_script("train.py", "--config", TINY_CONFIG, "--epoch", "3")
    assert_one_line_error(result, "'epoch'", "did you mean 'epochs'")
    result = run_script("train.py", "--config", str(tmp_path / "nope.yaml"))
    assert_one_line_error(result, "config file not found")
    result = run_script("train.py", "--config", TINY_CONFIG, "--batch_size", "0")
    assert_one_line_error(result, "batch_size must be a whole number in [1, inf), got 0")
    config = tmp_path / "arch_number.yaml"
    config.write_text(open(TINY_CONFIG).read().replace("arch: bit_m_r50x1", "arch: 50"))
    result = run_script("train.py", "--config", str(config))
    assert_one_line_error(result, "arch must be text, got 50")
