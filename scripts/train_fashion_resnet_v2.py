"""Train the Gluon model zoo's ResNetV2 (BasicBlockV2, thumbnail stem, small widths)
on Fashion-MNIST with MXNet Gluon; write ``.params`` + a JSON description.

Never runs in CI.  The committed model is the default run (2 epochs, seed 0): 50 min on 2
cores shared with other jobs (about 5 min per epoch on 2 free cores), 90.94% fp32 on the 10k
test images:

    OMP_NUM_THREADS=2 MXNET_ENGINE_TYPE=NaiveEngine python scripts/train_fashion_resnet_v2.py

``fashion_resnet_v2_deep`` (8/8/8 blocks, 50 layers, 93.04% after 5 epochs; 65 min on 2 cores
shared with another job, MXNet's threaded engine about 0.8 s per step when the cores are free):

    MXNET_ENGINE_TYPE=ThreadedEnginePerDevice python scripts/train_fashion_resnet_v2.py \
        --layers 8 8 8 --epochs 5 --wd 1e-4 --out tvm_quant_ext/models/fashion_resnet_v2_deep

Data: Debian package ``dataset-fashion-mnist`` (/usr/share/datasets/fashion-mnist).
Inputs are scaled to [0, 1] then normalized with the training-set mean/std
(FASHION_MEAN / FASHION_STD in tvm_quant_ext.zoo), shape (N, 1, 28, 28).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MXNET_ENGINE_TYPE", "NaiveEngine")

import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402
from mxnet import autograd, gluon  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from tvm_quant_ext import zoo  # noqa: E402


def evaluate(net, images: np.ndarray, labels: np.ndarray, batch: int = 500) -> float:
    correct = 0
    for i in range(0, len(images), batch):
        out = net(mx.nd.array(images[i:i + batch])).asnumpy()
        correct += int((out.argmax(1) == labels[i:i + batch]).sum())
    return correct / len(images)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--wd", type=float, default=5e-4)
    ap.add_argument("--layers", type=int, nargs="+", default=zoo.FASHION_RESNET_V2_ARCH["layers"],
                    help="BasicBlockV2 blocks per stage")
    ap.add_argument("--channels", type=int, nargs="+", default=zoo.FASHION_RESNET_V2_ARCH["channels"],
                    help="stem width, then one width per stage")
    ap.add_argument("--out", default=os.path.join("tvm_quant_ext", "models", "fashion_resnet_v2"))
    args = ap.parse_args(argv)
    if len(args.channels) != len(args.layers) + 1:
        ap.error(f"--channels needs {len(args.layers) + 1} widths (stem + one per stage), got {args.channels}")

    mx.random.seed(args.seed)
    rng = np.random.RandomState(args.seed)
    x_train, y_train = zoo.fashion_mnist("train")
    x_test, y_test = zoo.fashion_mnist("t10k")
    x_train = zoo.fashion_normalize(x_train)
    x_test = zoo.fashion_normalize(x_test)

    arch = dict(zoo.FASHION_RESNET_V2_ARCH, layers=list(args.layers), channels=list(args.channels))
    net = zoo.fashion_resnet_v2_block(arch)
    net.initialize(mx.init.Xavier(magnitude=2.0))
    net.hybridize(static_alloc=True, static_shape=True)

    steps_per_epoch = len(x_train) // args.batch_size
    total = steps_per_epoch * args.epochs
    # cosine decay after one warm-up epoch's worth of linear ramp
    sched = mx.lr_scheduler.CosineScheduler(max_update=total, base_lr=args.lr, final_lr=1e-4,
                                            warmup_steps=steps_per_epoch // 2)
    trainer = gluon.Trainer(net.collect_params(), "sgd",
                            {"learning_rate": args.lr, "momentum": 0.9, "wd": args.wd, "lr_scheduler": sched})
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()

    t0 = time.time()
    for epoch in range(args.epochs):
        order = rng.permutation(len(x_train))
        run_loss = 0.0
        for step in range(steps_per_epoch):
            idx = order[step * args.batch_size:(step + 1) * args.batch_size]
            xb = x_train[idx]
            flip = rng.rand(len(idx)) < 0.5  # horizontal flips: clothes are left/right symmetric
            xb[flip] = xb[flip][..., ::-1]
            data, label = mx.nd.array(xb), mx.nd.array(y_train[idx])
            with autograd.record():
                loss = loss_fn(net(data), label)
            loss.backward()
            trainer.step(len(idx))
            run_loss += float(loss.mean().asscalar())
            if step % 100 == 0:
                print(f"epoch {epoch} step {step}/{steps_per_epoch} loss {run_loss / (step + 1):.4f} "
                      f"{time.time() - t0:.0f}s", flush=True)
        acc = evaluate(net, x_test, y_test)
        print(f"epoch {epoch} done: test acc {acc:.4f} ({time.time() - t0:.0f}s)", flush=True)

    acc = evaluate(net, x_test, y_test)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    net.save_parameters(args.out + ".params")
    meta = {
        "architecture": "mxnet.gluon.model_zoo.vision.resnet.ResNetV2",
        **arch,
        "input_shape": [1, 1, 28, 28],
        "normalization": {"scale": "pixel / 255", "mean": zoo.FASHION_MEAN, "std": zoo.FASHION_STD},
        "dataset": "Fashion-MNIST (Debian dataset-fashion-mnist)",
        "fp32_test_accuracy": acc,
        "n_test_images": int(len(x_test)),
        "training": {"epochs": args.epochs, "batch_size": args.batch_size, "optimizer": "sgd momentum 0.9",
                     "lr": args.lr, "schedule": "cosine, half-epoch warm-up", "wd": args.wd,
                     "augmentation": "random horizontal flip", "seed": args.seed,
                     "wall_seconds": round(time.time() - t0)},
    }
    with open(args.out + ".json", "w") as f:
        json.dump(meta, f, indent=2)
    print(f"saved {args.out}.params, fp32 test accuracy {acc:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
