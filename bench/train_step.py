"""Train-step (or inference) speed of a model here against its PyTorch reference (timm; a PyTorch MAE
built from timm's blocks for MAE pretraining), on the same machine, in one run.

    python bench/train_step.py --arch beit_base_patch16_224 --batch 8 [--image_size 224] [--steps 5]
        [--mode train|infer] [--tiny] [--device CPU|GPU] [--amp] [--recompute] [--reference eager|compile]
        [--profile N] [--rounds N] [--isa native|avx2]

Each side runs in its own process (so that each reports its own peak memory), never at the same time as the
other (see the turns below): MindSpore in GRAPH_MODE with the full train-one-step cell (dynamic loss
scale, global-norm clip, EMA), PyTorch eager with the same optimizer, the same loss scaling, clip and EMA.
Prints the median step time, images/s and peak memory of each, and the ratio of images/s (>1: faster here).
With --reference compile PyTorch also runs compiled (torch.compile), reported beside eager for information.
With --recompute each side also runs with activation checkpointing (MindSpore's cell recompute of every
block / unit; timm's set_grad_checkpointing), and the memory saved and the time added are printed for each.
With --profile N each side also prints its N costliest operation types per step (MindSpore's profiler, the
torch profiler's self CPU time), measured over --steps further steps: where one CPU loses against another.
The sides' processes take turns step by step (one step of one side, then one of the other, the other idle
meanwhile), so that a host whose speed drifts slows them alike. With --rounds N this is repeated with new
processes N times and each side's median round is reported; CPU time the host took from this virtual machine
during a side's steps (its steal time) is printed.
With --isa avx2 both sides are held to AVX2 on an AVX-512 machine (oneDNN's ONEDNN_MAX_CPU_ISA, in MindSpore and
in PyTorch; MKL_ENABLE_INSTRUCTIONS and ATEN_CPU_CAPABILITY for PyTorch; the fused kernels compiled for haswell):
the AVX2 code paths on this machine's cores and caches, not a measurement of an AVX2 machine. MindSpore's own CPU
operators keep their AVX-512 code.
"""
import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from machine import describe_machine, stolen_cpu_seconds

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

TINY_VIT = dict(embed_dim=192, depth=2, num_heads=3)
# name: (our constructor's kwargs, the reference, optimizer); ViTs use AdamW, BiT SGD with momentum
MODELS = {
    "beit_base_patch16_224": dict(ours=dict(use_rel_pos_bias=True, use_abs_pos_emb=False, init_values=0.1),
                                  reference="timm:beit_base_patch16_224", optimizer="adamw"),
    "vit_base_patch16": dict(ours=dict(global_pool=True), reference="timm:vit_base_patch16_224",
                             reference_kwargs=dict(global_pool="avg", fc_norm=True), optimizer="adamw"),
    "mae_vit_base_patch16": dict(ours=dict(norm_pix_loss=True, mask_ratio=0.75), reference="mae",
                                 optimizer="adamw"),
    "bit_m_r50x1": dict(ours={}, reference="timm:resnetv2_50x1_bit", optimizer="momentum"),
}
TINY = {
    "beit_base_patch16_224": dict(TINY_VIT),
    "vit_base_patch16": dict(TINY_VIT),
    "mae_vit_base_patch16": dict(TINY_VIT, decoder_embed_dim=128, decoder_depth=1, decoder_num_heads=4),
    "bit_m_r50x1": dict(layers=[1, 1, 1, 1]),
}
NUM_CLASSES = 1000


def peak_memory_mib(device, framework):
    if device == "GPU":
        if framework == "torch":
            import torch
            return torch.cuda.max_memory_allocated() / 2 ** 20
        import mindspore as ms
        return ms.runtime.max_memory_allocated() / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_mindspore(args, spec, size_kwargs):
    import mindspore as ms
    import numpy as np
    from mindspore import nn

    from src.engine.criterion import LabelSmoothingCrossEntropy
    from src.engine.train_one_step import TrainOneStepCell
    from src.models import create_model
    from src.models.layers import recompute_units
    from src.models.mae.mae import MaePretrainLoss
    from src.optim.optimizer import AdamW, Momentum

    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_device(args.device)
    rng = np.random.default_rng(0)
    images = ms.Tensor(rng.standard_normal((args.batch, 3, args.image_size, args.image_size)).astype(np.float32))
    labels = ms.Tensor(rng.integers(0, NUM_CLASSES, args.batch).astype(np.int32))
    pretraining = spec["reference"] == "mae"
    kwargs = dict(spec["ours"], **size_kwargs)
    if not args.arch.startswith("bit_"):  # BiT is fully convolutional: it takes any input size
        kwargs["img_size"] = args.image_size
    network = create_model(args.arch, **({} if pretraining else {"num_classes": NUM_CLASSES}), **kwargs)
    if args.with_recompute:
        recompute_units(network)
    if args.amp:
        network = ms.amp.auto_mixed_precision(network, "O2")
    if args.mode == "infer":
        network.set_train(False)
        forward = (lambda: network(images)[0]) if pretraining else (lambda: network(images))
        return time_steps(lambda: forward().asnumpy(), args.steps, lambda: None, profiler(args, profile_mindspore))
    with_loss = MaePretrainLoss(network) if pretraining else nn.WithLossCell(network, LabelSmoothingCrossEntropy(0.1))
    if spec["optimizer"] == "adamw":
        optimizer = AdamW(network.trainable_params(), learning_rate=1e-4, weight_decay=0.05)
    else:
        optimizer = Momentum(network.trainable_params(), learning_rate=0.01, momentum=0.9, weight_decay=1e-4)
    scale = nn.DynamicLossScaleUpdateCell(loss_scale_value=1024.0, scale_factor=2, scale_window=1000)
    step = TrainOneStepCell(with_loss, optimizer, scale, clip_global_norm=1.0, ema_decay=0.9999)
    step.set_train()
    return time_steps(lambda: step(images, labels)[0].asnumpy(), args.steps, lambda: None,
                      profiler(args, profile_mindspore))


def torch_reference(args, spec, size_kwargs):
    import timm

    if spec["reference"] == "mae":
        from torch_mae import TorchMae
        return TorchMae(img_size=args.image_size, **dict(spec["ours"], **size_kwargs))
    name = spec["reference"].split(":", 1)[1]
    kwargs = dict(spec.get("reference_kwargs", {}), **size_kwargs)
    if "layers" in kwargs:  # a BiT of other depths: timm's ResNetV2 with the BiT stem and layers
        from functools import partial

        from timm.layers import StdConv2d
        from timm.models.resnetv2 import ResNetV2
        return ResNetV2(layers=kwargs["layers"], num_classes=NUM_CLASSES, stem_type="fixed",
                        conv_layer=partial(StdConv2d, eps=1e-8))
    if "resnet" not in name:
        kwargs["img_size"] = args.image_size
    return timm.create_model(name, num_classes=NUM_CLASSES, **kwargs)


def run_torch(args, spec, size_kwargs):
    import torch

    device = "cuda" if args.device == "GPU" else "cpu"
    torch.manual_seed(0)
    network = torch_reference(args, spec, size_kwargs).to(device)
    if args.with_recompute:
        network.set_grad_checkpointing(True)
    if args.compiled:
        network = torch.compile(network)
    images = torch.randn(args.batch, 3, args.image_size, args.image_size, device=device)
    labels = torch.randint(0, NUM_CLASSES, (args.batch,), device=device)
    pretraining = spec["reference"] == "mae"
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    autocast = lambda: torch.autocast(device, dtype=torch.float16, enabled=args.amp)  # noqa: E731
    if args.mode == "infer":
        network.eval()

        def infer():
            with torch.inference_mode(), autocast():
                network(images)
        return time_steps(infer, args.steps, sync, profiler(args, profile_torch))
    network.train()
    params = list(network.parameters())
    if spec["optimizer"] == "adamw":
        optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05)
    else:
        optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-4)
    ema = [param.detach().clone() for param in params]
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    scale = 1024.0

    def train_step():
        # the same work as the MindSpore cell: scaled backward, unscale, finite check, clip, step, EMA
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            loss = network(images) if pretraining else criterion(network(images), labels)
        (loss * scale).backward()
        grads = [param.grad for param in params if param.grad is not None]
        torch._foreach_mul_(grads, 1.0 / scale)
        if all(torch.isfinite(grad).all() for grad in grads):
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            with torch.no_grad():
                torch._foreach_lerp_(ema, params, 1 - 0.9999)
        loss.item()
    return time_steps(train_step, args.steps, sync, profiler(args, profile_torch))


def time_steps(step, steps, sync, profile=None):
    """The median time of `steps` steps after two warm-up steps (compilation), each step and the warm-up in a turn
    the parent gives this side; with `profile`, the steps run again under it, in one more turn."""
    with turn():
        step()
        step()
    times = []
    for _ in range(steps):
        with turn():
            start = time.perf_counter()
            step()
            sync()
            times.append(time.perf_counter() - start)
    times.sort()
    if profile is not None:
        with turn():
            PROFILE["ops"] = profile(step, steps)
    return times[len(times) // 2]


@contextlib.contextmanager
def turn():
    """A side's turn: begins when the parent writes a line to the side's stdin, ends by telling it so."""
    if sys.stdin.readline() != f"{GO}\n":
        sys.exit("the parent process ended the run")
    yield
    print(DONE, flush=True)


GO, DONE, RESULT = "@@go", "@@done", "@@result"  # the lines that pass between parent and side
TURN_GAP_SECONDS = 0.02  # between turns: the threads of the side that just ran stop spinning before the next runs


PROFILE = {}


def profiler(args, profile):
    """`profile` for the plain run of a side when --profile is asked for, else None."""
    return profile if args.profile and not (args.with_recompute or args.compiled) else None


def mindspore_op_label(row):
    """An op type, with the cell it serves for the fused kernels (all of type Custom), e.g. 'Custom GELU backward'.
    Some backward kernels (GroupNorm's) run outside any cell's scope, as the train step's own kernels do."""
    if row["op_type"] != "Custom":
        return row["op_type"]
    cells = [scope.split("-", 1)[1] for scope in row["full_op_name"].split("/")[:-1] if "-" in scope]
    backward = " backward" if row["full_op_name"].startswith("Gradients") else ""
    return f"Custom {cells[-1] if cells else 'unscoped (train step, some backward)'}{backward}"


def profile_mindspore(step, steps):
    """[(op, ms per step)] from MindSpore's profiler (its CPU op summary)."""
    import csv
    import glob

    from mindspore import Profiler

    folder = tempfile.mkdtemp(prefix="ms_profile_")
    profiler = Profiler(output_path=folder)
    for _ in range(steps):
        step()
    profiler.analyse()
    totals = {}
    for path in glob.glob(os.path.join(folder, "**", "cpu_op_detail_info_*.csv"), recursive=True):
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                label = mindspore_op_label(row)
                totals[label] = totals.get(label, 0.0) + float(row["op_total_time(ms)"]) / steps
    return sorted(totals.items(), key=lambda item: -item[1])


def profile_torch(step, steps):
    """[(op, ms per step)] of self CPU time from the torch profiler."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    rows = [(event.key, event.self_cpu_time_total / 1000 / steps) for event in prof.key_averages()]
    return sorted(rows, key=lambda item: -item[1])


def run_side(args):
    spec = MODELS[args.arch]
    size_kwargs = TINY[args.arch] if args.tiny else {}
    seconds = (run_mindspore if args.side == "mindspore" else run_torch)(args, spec, size_kwargs)
    framework = "mindspore" if args.side == "mindspore" else "torch"
    print(RESULT)
    print(json.dumps({"seconds": seconds, "peak_mib": peak_memory_mib(args.device, framework),
                      "ops": PROFILE.get("ops", [])[:args.profile]}))


# environment that holds both sides to one instruction set (--isa)
ISA_ENVIRONMENTS = {"native": {}, "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
                                         "ATEN_CPU_CAPABILITY": "avx2", "FUSED_CPU_KERNELS_MARCH": "haswell"}}


def run_in_turns(commands, turns, environment):
    """[(the side's result, CPU seconds stolen by the host during its turns)] of each side's command, the sides
    taking their turns (turns[i] for side i) in order: the first their warm-up, so that compilations do not
    overlap with anyone's timed steps; `environment` is added to theirs."""
    sides = []
    try:
        for command in commands:
            errors = tempfile.TemporaryFile(mode="w+")
            sides.append((subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors,
                                           text=True, env=dict(os.environ, GLOG_v="3", **environment)), errors))
        stolen = [0.0] * len(sides)
        for round_index in range(max(turns)):
            for index, (side, errors) in enumerate(sides):
                if round_index >= turns[index]:
                    continue
                time.sleep(TURN_GAP_SECONDS)
                stolen_before = stolen_cpu_seconds()
                side.stdin.write(f"{GO}\n")
                side.stdin.flush()
                await_line(side, errors, DONE)
                stolen[index] += stolen_cpu_seconds() - stolen_before
        results = []
        for side, errors in sides:
            await_line(side, errors, RESULT)
            results.append(json.loads(side.stdout.readline()))
        return list(zip(results, stolen))
    finally:
        for side, errors in sides:
            side.kill()
            side.wait()
            errors.close()


def await_line(side, errors, expected):
    """Reads the side's output up to the line `expected`; exits with its error output if it ends first."""
    for line in side.stdout:
        if line.rstrip("\n") == expected:
            return
    side.wait()
    errors.seek(0)
    sys.exit(f"a side failed ({' '.join(side.args[-3:])}):\n{errors.read()[-3000:]}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=sorted(MODELS), default="beit_base_patch16_224")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--mode", choices=["train", "infer"], default="train")
    parser.add_argument("--tiny", action="store_true", help="a 2-block ViT / one-unit-per-stage BiT")
    parser.add_argument("--device", choices=["CPU", "GPU"], default="CPU")
    parser.add_argument("--amp", action="store_true", help="float16 compute (MindSpore O2, torch autocast)")
    parser.add_argument("--recompute", action="store_true",
                        help="also run each side with activation checkpointing, and compare")
    parser.add_argument("--reference", choices=["eager", "compile"], default="eager",
                        help="compile: also PyTorch with torch.compile, reported beside eager (for information)")
    parser.add_argument("--isa", choices=sorted(ISA_ENVIRONMENTS), default="native",
                        help="avx2: both sides held to AVX2 (on an AVX-512 machine: its AVX2 code paths)")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="also print each side's N costliest operation types per step")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run the sides in turn this many times; each side's median over the rounds is reported")
    parser.add_argument("--side", choices=["mindspore", "torch"], help=argparse.SUPPRESS)
    parser.add_argument("--with_recompute", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--compiled", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        return run_side(args)

    # (side, variant): each in its own process
    runs = [("mindspore", ""), ("torch", "")]
    runs += [("mindspore", "recompute"), ("torch", "recompute")] if args.recompute else []
    runs += [("torch", "compile")] if args.reference == "compile" else []
    flags = {"": [], "recompute": ["--with_recompute"], "compile": ["--compiled"]}
    rounds = {run: [] for run in runs}
    stolen = {run: 0.0 for run in runs}
    for _ in range(args.rounds):
        commands = [[sys.executable, os.path.abspath(__file__), *sys.argv[1:], "--side", side, *flags[variant]]
                    for side, variant in runs]
        turns = [1 + args.steps + (bool(args.profile) and variant == "") for _, variant in runs]  # (see profiler)
        for run, (measured, stolen_seconds) in zip(runs, run_in_turns(commands, turns, ISA_ENVIRONMENTS[args.isa])):
            rounds[run].append(measured)
            stolen[run] += stolen_seconds
    results = {run: sorted(measured, key=lambda result: result["seconds"])[len(measured) // 2]
               for run, measured in rounds.items()}
    name = f"{args.arch}{' (tiny)' if args.tiny else ''}"
    print(f"{name} {args.mode}, batch {args.batch}, {args.image_size}px, {args.device}"
          f"{' AMP' if args.amp else ''}; {describe_machine()}"
          + ("; both sides held to AVX2" if args.isa == "avx2" else ""))
    memory = "GPU memory" if args.device == "GPU" else "peak RSS"
    for side, variant in runs:
        label = f"{ {'mindspore': 'MindSpore', 'torch': 'PyTorch'}[side]} {variant}".strip()
        seconds = results[side, variant]["seconds"]
        spread = ", ".join(f"{result['seconds'] * 1000:.0f}" for result in rounds[side, variant])
        print(f"{label:19}: {seconds * 1000:9.1f} ms/step {args.batch / seconds:8.2f} images/s  "
              f"{memory} {results[side, variant]['peak_mib']:7.0f} MiB"
              + (f"  (rounds: {spread} ms)" if args.rounds > 1 else "")
              + (f"  CPU time stolen by the host: {stolen[side, variant]:.1f} s" if stolen[side, variant] >= 0.5
                 else ""))
    for side, variant in runs:
        if results[side, variant]["ops"]:
            print(f"costliest operations, {side} (ms per step):")
            for op, ms_per_step in results[side, variant]["ops"]:
                print(f"    {ms_per_step:9.2f}  {op}")
    ours = results["mindspore", ""]["seconds"]
    print(f"ratio (images/s here / PyTorch): {results['torch', '']['seconds'] / ours:.2f}x")
    if args.reference == "compile":
        compiled = results["torch", "compile"]["seconds"]
        print(f"ratio (images/s here / PyTorch with torch.compile): {compiled / ours:.2f}x")
    for side in ("mindspore", "torch") if args.recompute else ():
        plain, recomputed = results[side, ""], results[side, "recompute"]
        print(f"recompute, {side}: peak memory {recomputed['peak_mib'] / plain['peak_mib'] - 1:+.0%}, "
              f"step time {recomputed['seconds'] / plain['seconds'] - 1:+.0%}")


if __name__ == "__main__":
    main()
