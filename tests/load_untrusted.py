"""Hand files to an entry point's main() one after another in one process (one start of MindSpore):

    python tests/load_untrusted.py conv|pretrained|control RESULTS.json [--data_url D] FILE...

conv: conv_pt2ckpt.py --pth_file FILE; pretrained: train.py --pretrained FILE on the tiny BiT config;
control: the unrestricted loaders (pickle.load, torch.load with weights_only=False), to show that the
payloads are live. Writes {file: {"exit": code, "stderr": [lines]}} as JSON.
"""
import contextlib
import io
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def run_main(main, argv):
    stderr = io.StringIO()
    code = 0
    with contextlib.redirect_stderr(stderr):
        try:
            main(argv)
        except SystemExit as exit_:
            code = exit_.code
        except Exception as err:  # a traceback is a failure the test reports
            code, stderr = "exception", io.StringIO(f"Traceback: {type(err).__name__}: {err}")
    return {"exit": code, "stderr": [line for line in stderr.getvalue().splitlines() if line.strip()]}


def unrestricted_load(path):
    import pickle
    import zipfile

    import torch
    if zipfile.is_zipfile(path):
        torch.load(path, weights_only=False)
    else:
        with open(path, "rb") as file:
            pickle.load(file)


def main():
    mode, results_path, *rest = sys.argv[1:]
    data_url = None
    if rest[0] == "--data_url":
        data_url, rest = rest[1], rest[2:]
    results = {}
    for path in rest:
        if mode == "conv":
            import conv_pt2ckpt
            results[path] = run_main(conv_pt2ckpt.main, ["--pth_file", path, "--ckpt_file", path + ".ckpt"])
        elif mode == "pretrained":
            import train
            config = os.path.join(ROOT, "src", "configs", "bit_tiny_cifar10_cpu.yaml")
            results[path] = run_main(train.main, ["--config", config, "--data_url", data_url, "--epochs", "1",
                                                  "--train_url", path + ".out", "--pretrained", path])
        else:
            results[path] = run_main(unrestricted_load, path)
    with open(results_path, "w") as file:
        json.dump(results, file)


if __name__ == "__main__":
    main()
