#!/bin/sh
# Stand-in for `python -m uvicorn app:app` on a base without Python: shows what the image holds.
echo "model: $MODEL_PATH"
ls "$MODEL_PATH"
cat "$MODEL_PATH/config.json"
echo
echo "user: $(id -u):$(id -g)"
