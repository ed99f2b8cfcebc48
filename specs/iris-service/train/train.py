"""Trains the example's model: multinomial logistic regression on Fisher's iris data
(train/iris.data, from the UCI repository as the itertools crate ships it), full-batch
gradient descent on standardized features, numpy only. Writes ../model/iris.safetensors:
`mean`, `std` (4,), `weight` (4, 3), `bias` (3,) as F32, the class names in the metadata.
Deterministic: the same numpy gives the same bytes.

    python3 specs/iris-service/train/train.py
"""
import json
import pathlib
import struct

import numpy as np

here = pathlib.Path(__file__).resolve().parent
rows = [l.split(",") for l in (here / "iris.data").read_text().splitlines() if l.strip()]
labels = sorted({r[4].removeprefix("Iris-") for r in rows})
x = np.array([[float(v) for v in r[:4]] for r in rows], dtype=np.float64)
y = np.array([labels.index(r[4].removeprefix("Iris-")) for r in rows])
mean, std = x.mean(axis=0), x.std(axis=0)
z = (x - mean) / std
onehot = np.eye(len(labels))[y]
w = np.zeros((4, len(labels)))
b = np.zeros(len(labels))
for _ in range(3000):
    logits = z @ w + b
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    g = (p - onehot) / len(z)
    w -= 0.5 * (z.T @ g + 1e-3 * w)
    b -= 0.5 * g.sum(axis=0)
accuracy = float(((z @ w + b).argmax(axis=1) == y).mean())
print(f"training accuracy {accuracy:.3f}")

tensors = {"bias": b, "mean": mean, "std": std, "weight": w}
header, blobs, offset = {}, [], 0
for name in sorted(tensors):
    data = tensors[name].astype("<f4").tobytes()
    header[name] = {"dtype": "F32", "shape": list(tensors[name].shape), "data_offsets": [offset, offset + len(data)]}
    blobs.append(data)
    offset += len(data)
header["__metadata__"] = {"labels": ",".join(labels), "accuracy": f"{accuracy:.3f}", "format": "pt"}
text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
text += b" " * (-len(text) % 8)
out = here.parent / "model" / "iris.safetensors"
out.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))
print(f"wrote {out} ({out.stat().st_size} bytes)")
