"""Upload throughput to S3 (moto on loopback) through the vops storage layer, against plain
boto3 ``upload_file`` with a tuned TransferConfig, on the same bytes.

    ours      Store.put_file (what checkpoint uploads use: multipart, SHA-256 recorded in the
              object's metadata, CRC32 checked by S3)
    boto3     client.upload_file, TransferConfig(multipart 16 MiB chunks, 10 threads)
    publish   a whole checkpoint-shaped folder (files in parallel + manifest + LATEST),
              against boto3 uploading the same files one after the other

Rounds alternate (ours, boto3, ours, ...) so machine load hits both; the medians are
compared. Target: ours / boto3 >= 0.9.

    python bench/upload_throughput.py [--mb 256] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "bench")]

from checkpoint_blocking import start_moto  # noqa: E402  (same moto helper)

MIB = 1 << 20


def write_random(path: Path, size: int) -> None:
    with open(path, "wb") as file:
        left = size
        while left:
            chunk = min(left, 16 * MIB)
            file.write(os.urandom(chunk))
            left -= chunk


def checkpoint_folder(root: Path, total: int) -> Path:
    """Files shaped like a checkpoint: weights 1/3, optimizer 2/3, a few small ones."""
    folder = root / "ckpt"
    folder.mkdir()
    write_random(folder / "model.safetensors", total // 3)
    write_random(folder / "optimizer.pt", total - total // 3)
    for name in ("scheduler.pt", "rng_state.pth", "trainer_state.json", "config.json"):
        (folder / name).write_bytes(os.urandom(4096))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    size = options.mb * MIB
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        moto = start_moto(root)
        try:
            results = measure(root, size, options.rounds)
        finally:
            moto.stop()
    print(f"upload throughput to moto S3 on loopback, {options.mb} MiB, "
          f"{options.rounds} alternating rounds (median MB/s)")
    for name, (ours, base) in results.items():
        print(f"  {name:<8} ours {ours:8.1f} MB/s   boto3 {base:8.1f} MB/s   "
              f"ratio {ours / base:.3f}")
    ratio = results["file"][0] / results["file"][1]
    print(f"ratio ours/boto3 (single file) = {ratio:.3f}  (target >= 0.9: "
          f"{'PASS' if ratio >= 0.9 else 'FAIL'})")


def measure(root: Path, size: int, rounds: int) -> dict[str, tuple[float, float]]:
    import boto3
    from boto3.s3.transfer import TransferConfig

    from vicuna_ops.storage import open_store
    from vicuna_ops.train.checkpoint import publish_checkpoint

    client = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    tuned = TransferConfig(multipart_threshold=16 * MIB, multipart_chunksize=16 * MIB,
                           max_concurrency=10, use_threads=True)
    store = open_store("s3://bench/throughput")
    big = root / "big.bin"
    write_random(big, size)
    folder = checkpoint_folder(root, size)
    folder_bytes = sum(p.stat().st_size for p in folder.iterdir())

    def timed(action) -> float:
        started = time.perf_counter()
        action()
        return time.perf_counter() - started

    samples: dict[str, tuple[list[float], list[float]]] = {"file": ([], []), "publish": ([], [])}
    for index in range(rounds):
        samples["file"][0].append(size / timed(lambda: store.put_file(f"ours/{index}", big)))
        samples["file"][1].append(size / timed(lambda: client.upload_file(
            str(big), "bench", f"throughput/boto3/{index}", Config=tuned)))
        samples["publish"][0].append(folder_bytes / timed(
            lambda: publish_checkpoint(store.child("run"), folder, index + 1, {})))
        samples["publish"][1].append(folder_bytes / timed(lambda: [
            client.upload_file(str(path), "bench", f"throughput/boto3-ckpt/{index}/{path.name}",
                               Config=tuned) for path in sorted(folder.iterdir())]))
        store.delete_prefix("")  # keep moto's memory flat
    return {name: (statistics.median(ours) / 1e6, statistics.median(base) / 1e6)
            for name, (ours, base) in samples.items()}


if __name__ == "__main__":
    main()
