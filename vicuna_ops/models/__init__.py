"""What happens to weights after training.

    context.py   a model's context length, RoPE scaling (pure: no torch)
    tensors.py   safetensors folders read tensor by tensor: index, digests, shard writer
    sources.py   a model folder or delta given as a path or a bucket URI
    delta.py     ``vops delta make`` / ``apply``: target - base, streamed shard by shard
"""
