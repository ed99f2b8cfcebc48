"""Iris classifier service: starlette on uvicorn, numpy for the model.

GET /health  200 {"status": "ok"} once the model is loaded, 503 before (and if loading failed).
POST /predict {"features": [sepal_length, sepal_width, petal_length, petal_width]}
             -> {"label": "setosa", "probabilities": {"setosa": 0.97, ...}}
"""
import json
import os
import threading

import numpy as np
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

MODEL_PATH = os.environ.get("MODEL_PATH", "/models/iris/iris.safetensors")
DTYPES = {"F32": "<f4", "F64": "<f8"}
state = {"model": None, "error": None}


def load_safetensors(path):
    """The safetensors format: u64 header length, JSON header, then the tensors' bytes."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", {})
    tensors = {}
    for name, t in header.items():
        start, end = t["data_offsets"]
        tensors[name] = np.frombuffer(data[start:end], dtype=DTYPES[t["dtype"]]).reshape(t["shape"])
    return tensors, meta


def load_model():
    try:
        tensors, meta = load_safetensors(MODEL_PATH)
        state["model"] = (tensors, meta["labels"].split(","))
        print(f"model loaded from {MODEL_PATH}", flush=True)
    except Exception as e:  # reported by /health
        state["error"] = f"{type(e).__name__}: {e}"
        print(f"model failed to load: {state['error']}", flush=True)


def predict_one(features):
    tensors, labels = state["model"]
    z = (np.asarray(features, dtype=np.float32) - tensors["mean"]) / tensors["std"]
    logits = z @ tensors["weight"] + tensors["bias"]
    p = np.exp(logits - logits.max())
    p /= p.sum()
    return {"label": labels[int(p.argmax())], "probabilities": {l: round(float(v), 4) for l, v in zip(labels, p)}}


async def health(request):
    if state["model"] is None:
        return JSONResponse({"status": "loading", "error": state["error"]}, status_code=503)
    return JSONResponse({"status": "ok"})


async def predict(request):
    if state["model"] is None:
        return JSONResponse({"error": "model not loaded"}, status_code=503)
    try:
        body = await request.json()
        features = [float(v) for v in body["features"]]
        if len(features) != 4:
            raise ValueError("features needs 4 numbers")
    except Exception as e:
        return JSONResponse({"error": f"bad request: {e}"}, status_code=422)
    return JSONResponse(predict_one(features))


app = Starlette(
    routes=[Route("/health", health), Route("/predict", predict, methods=["POST"])],
    on_startup=[lambda: threading.Thread(target=load_model, daemon=True).start()],
)
