"""Run by torchrun from tests/captioning/test_distributed.py: trains a tiny captioner data-parallel.

usage: distributed_worker.py DATA_DIR OUT_DIR NUM_EPOCHS [--resume CKPT] [--die-at K]
Rank 0 writes OUT_DIR/result.npz (loss history and final params).
"""
import argparse
import os

import numpy as np

from fastrnn.captioning.data import load_coco_data
from fastrnn.captioning.distributed import DistributedContext, distributed_solver
from fastrnn.captioning.model import CaptioningRNN

SETTINGS = dict(update_rule="adam", optim_config={"learning_rate": 5e-3}, lr_decay=0.9,
                batch_size=50, print_every=1000, progress=False, verbose=False, seed=3)


def build_model(data):
    return CaptioningRNN(data["word_to_idx"], input_dim=data["train_features"].shape[1],
                         wordvec_dim=16, hidden_dim=24, cell_type="lstm", dtype=np.float32,
                         seed=7)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("data")
    p.add_argument("out")
    p.add_argument("num_epochs", type=int)
    p.add_argument("--resume")
    p.add_argument("--die-at", type=int)
    args = p.parse_args()

    data = load_coco_data(args.data, max_train=200, seed=0)   # the same subset on every rank
    context = DistributedContext()
    solver = distributed_solver(context, build_model(data), data, resume=args.resume,
                                num_epochs=args.num_epochs, checkpoint_dir=args.out, **SETTINGS)
    if args.die_at is not None and context.rank == 1:
        original = solver._loss_and_grads

        def dying(features, captions):
            if solver.iteration + 1 == args.die_at:
                os._exit(17)
            return original(features, captions)
        solver._loss_and_grads = dying
    solver.train()
    if context.is_main:
        np.savez(os.path.join(args.out, "result.npz"), loss_history=np.asarray(solver.loss_history),
                 **solver.model.params)
    context.close()


if __name__ == "__main__":
    main()
