"""torchvision's reference for a multi-label image set: a torchvision ResNet trained in PyTorch
with the recipe `train.py` uses, so the two can be compared on the same data.

    python tools/multilabel_reference.py DIR [--model resnet18 --image_size 64 --steps 400
        --batch_size 32 --learning_rate 0.1 --crop_min_area 0.08]

DIR as `dataset=multilabel` reads it (images, train.csv, val.csv). The recipe: from scratch,
SGD with momentum 0.9 and weight decay 1e-4 (not on batch-norm parameters and biases), one
epoch of linear warm-up then a cosine decay per step, BCEWithLogitsLoss, RandomResizedCrop
(`--crop_min_area`..1 of the area) and a horizontal flip for training, resize to
image_size/0.875 then a centre crop for evaluation, ImageNet normalisation. Prints the eval mAP
(macro, scikit-learn) and micro-F1 at 0.5 every `--eval_every` steps.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    import torch
    import torchvision
    from PIL import Image
    from sklearn.metrics import f1_score
    from torchvision import transforms

    from resnet_jax.data import multilabel
    from resnet_jax.tasks import multilabel as multilabel_task

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data_dir")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--learning_rate", type=float, default=0.1)
    parser.add_argument("--crop_min_area", type=float, default=0.08)
    parser.add_argument("--eval_every", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    splits = multilabel.read_splits(args.data_dir)
    normalize = transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    train_tf = transforms.Compose([
        transforms.RandomResizedCrop(args.image_size, scale=(args.crop_min_area, 1.0)),
        transforms.RandomHorizontalFlip(), transforms.ToTensor(), normalize])
    eval_tf = transforms.Compose([transforms.Resize(round(args.image_size / 0.875)),
                                  transforms.CenterCrop(args.image_size), transforms.ToTensor(),
                                  normalize])
    train_images = [Image.open(p).convert("RGB") for p in splits.train.paths]
    eval_images = torch.stack([eval_tf(Image.open(p).convert("RGB"))
                               for p in splits.eval.paths])
    train_targets = torch.tensor(splits.targets(splits.train))
    eval_targets = splits.targets(splits.eval)

    model = getattr(torchvision.models, args.model)(num_classes=len(splits.class_names))
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    sgd = torch.optim.SGD([{"params": decay, "weight_decay": 1e-4},
                           {"params": no_decay, "weight_decay": 0.0}],
                          lr=args.learning_rate, momentum=0.9)
    warmup = max(1, len(train_images) // args.batch_size)

    def rate(step):
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(args.steps - warmup, 1)))

    schedule = torch.optim.lr_scheduler.LambdaLR(sgd, rate)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    rng = np.random.default_rng(args.seed)
    order = np.array([], int)
    for step in range(1, args.steps + 1):
        if len(order) < args.batch_size:
            order = np.concatenate([order, rng.permutation(len(train_images))])
        batch, order = order[:args.batch_size], order[args.batch_size:]
        images = torch.stack([train_tf(train_images[i]) for i in batch])
        model.train()
        loss = loss_fn(model(images), train_targets[batch])
        sgd.zero_grad()
        loss.backward()
        sgd.step()
        schedule.step()
        if step % args.eval_every == 0 or step == args.steps:
            model.eval()
            with torch.no_grad():
                probabilities = torch.sigmoid(model(eval_images)).numpy()
            mean_ap, _ = multilabel_task.mean_average_precision(eval_targets, probabilities)
            micro_f1 = f1_score(eval_targets.astype(int), (probabilities >= 0.5).astype(int),
                                average="micro", zero_division=0)
            print(f"step {step}: train loss {loss.item():.4f}, eval mAP {mean_ap:.4f}, "
                  f"micro-F1 {micro_f1:.4f}", flush=True)


if __name__ == "__main__":
    main()
