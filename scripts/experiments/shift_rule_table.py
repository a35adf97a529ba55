"""The shift rule's table in docs/events.md: the shipped model on MELD dev and test under the stored rule's
profiles, next to the first rule (the shift head's 1 - trace >= 0.203, `to` falling back to the shift head's
guess), counting that rule's shift events whose `to` contradicted the emotion event of the same utterance.

    PYTHONPATH=. python scripts/experiments/shift_rule_table.py [--data data/meld-mpnet-est/MELD_features_raw1.pkl]
"""

from __future__ import annotations

import argparse

import torch
from sklearn.metrics import f1_score

from pcgnet.checkpoint import load_checkpoint
from pcgnet.data import load_dataset
from pcgnet.evaluate import predict_dialogues
from pcgnet.metrics import binary_shift_metrics, evaluate_predictions

OLD_THRESHOLD = 0.20337835178361274  # the first rule's dev-chosen threshold of the shipped seed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="data/meld-mpnet-est/MELD_features_raw1.pkl")
    args = p.parse_args()
    torch.set_num_threads(1)
    ck = load_checkpoint("checkpoints/default")
    t = ck.meta["training"]
    ds = load_dataset("MELD", args.data, modalities=ck.config.modalities, need_persona=True,
                      valid_rate=float(t["valid_rate"]), seed=int(t["split_seed"]))
    for split in ("valid", "test"):
        pred = predict_dialogues(ck.model, ds.split(split))
        y, e = pred.labels.numpy(), pred.emotion_prob.numpy()
        pv, pc, tr = pred.pair_prev.numpy(), pred.pair_cur.numpy(), pred.shift_prob.numpy()
        c = e.shape[1]
        b = 1 - tr.reshape(-1, c, c).diagonal(axis1=1, axis2=2).sum(1)
        gold = y[pv] != y[pc]
        old = binary_shift_metrics(gold, b >= OLD_THRESHOLD, b)
        head = e.argmax(1)
        contradicting = int(((b >= OLD_THRESHOLD) & (head[pc] == head[pv])).sum())
        print(f"{split} first rule: W-F1 {100 * f1_score(y, head, average='weighted'):.2f} | shift P "
              f"{100 * old['precision']:.1f} R {100 * old['recall']:.1f} F1 {100 * old['f1']:.1f} AUROC "
              f"{100 * old['auroc']:.1f}; {contradicting} of {int((b >= OLD_THRESHOLD).sum())} shift events "
              f"contradicted their emotion event")
        m = evaluate_predictions(y, e, pv, pc, tr, ds.labels, ck.shift_rule)
        for name, pr in m["profiles"].items():
            print(f"{split} {ck.shift_rule.name} {name:9s} (t={pr['threshold']:.3f}): W-F1 "
                  f"{100 * pr['reported_weighted_f1']:.2f} | shift P {100 * pr['precision']:.1f} R "
                  f"{100 * pr['recall']:.1f} F1 {100 * pr['f1']:.1f} AUROC {100 * pr['auroc']:.1f}")


if __name__ == "__main__":
    main()
