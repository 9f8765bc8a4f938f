"""What happens to weights after training.

    context.py   a model's context length, RoPE scaling (pure: no torch)
    tensors.py   safetensors folders read tensor by tensor: index, digests, shard writer
    sources.py   a model folder or delta given as a path or a bucket URI
    delta.py     ``vops delta make`` / ``apply``: target - base, streamed shard by shard
    quantize.py  ``vops quantize``: 4-bit GPTQ/AWQ, calibrated on the run's data, reported
    compressor.py  llm-compressor: the recipe, calibration, the compressed-tensors checkpoint
    calibration.py  calibration/eval conversations and perplexity over assistant tokens
    publish.py   a built model folder to a path or bucket, MANIFEST.json last
"""
