"""Sentiment API: loads the model from MODEL_PATH and serves /predict."""
import json
import os

from tinytok import tokenize

MODEL_PATH = os.environ.get("MODEL_PATH", "/models/sst2")


def load_config():
    with open(os.path.join(MODEL_PATH, "config.json")) as f:
        return json.load(f)


def predict(text):
    tokens = tokenize(text)
    return {"label": "POSITIVE" if len(tokens) % 2 == 0 else "NEGATIVE", "tokens": len(tokens)}
